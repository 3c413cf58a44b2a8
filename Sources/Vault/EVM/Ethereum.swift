import Custody

/// Recursive Length Prefix encoding (the Ethereum Yellow Paper, appendix B): byte strings and
/// lists, integers as big-endian byte strings without leading zeros (zero is the empty string).
public enum RLP {
  /// A byte string item.
  public static func encode(bytes: some Collection<UInt8>) -> [UInt8] {
    var out = [UInt8]()
    appendBytes(bytes, to: &out)
    return out
  }

  /// A list item whose members are the already encoded `items`.
  public static func encode(list items: [[UInt8]]) -> [UInt8] {
    var out = [UInt8]()
    appendList(items, to: &out)
    return out
  }

  /// An unsigned integer item.
  public static func encode(uint value: UInt64) -> [UInt8] {
    encode(bytes: bigEndianMinimal(value))
  }

  /// An unsigned 256-bit integer item.
  public static func encode(amount: Amount) -> [UInt8] {
    encode(bytes: amount.bigEndianBytes)
  }

  static func appendBytes(_ bytes: some Collection<UInt8>, to out: inout [UInt8]) {
    if bytes.count == 1, let only = bytes.first, only < 0x80 {
      out.append(only)
      return
    }
    appendHeader(bytes.count, shortBase: 0x80, to: &out)
    out.append(contentsOf: bytes)
  }

  static func appendList(_ items: [[UInt8]], to out: inout [UInt8]) {
    appendHeader(items.reduce(0) { $0 + $1.count }, shortBase: 0xC0, to: &out)
    for item in items { out.append(contentsOf: item) }
  }

  /// The prefix of a payload of `length` bytes: one byte up to 55, else the length's length.
  static func appendHeader(_ length: Int, shortBase: UInt8, to out: inout [UInt8]) {
    if length <= 55 {
      out.append(shortBase + UInt8(length))
    } else {
      let lengthBytes = bigEndianMinimal(UInt64(length))
      out.append(shortBase + 55 + UInt8(lengthBytes.count))
      out.append(contentsOf: lengthBytes)
    }
  }

  static func bigEndianMinimal(_ value: UInt64) -> [UInt8] {
    var bytes = [UInt8]()
    var shift = 56
    while shift >= 0 {
      let byte = UInt8(truncatingIfNeeded: value >> UInt64(shift))
      if byte != 0 || !bytes.isEmpty { bytes.append(byte) }
      shift -= 8
    }
    return bytes
  }
}

/// What the vault marshals and signs for Ethereum: EIP-1559 (type 2) transactions and EIP-191
/// personal messages.
public enum EthereumSigning {
  /// The RLP list items of an EIP-1559 transaction before its signature: chain id, nonce, max
  /// priority fee per gas, max fee per gas, gas limit, to, value, data, access list.
  static func unsignedItems(_ transaction: EIP1559Transaction) -> [[UInt8]] {
    let accessList = RLP.encode(
      list: transaction.accessList.map { entry in
        RLP.encode(list: [
          RLP.encode(bytes: entry.address), RLP.encode(list: entry.storageKeys.map { RLP.encode(bytes: $0) }),
        ])
      })
    return [
      RLP.encode(uint: transaction.chainID), RLP.encode(uint: transaction.nonce),
      RLP.encode(amount: transaction.maxPriorityFeePerGas), RLP.encode(amount: transaction.maxFeePerGas),
      RLP.encode(uint: transaction.gasLimit), RLP.encode(bytes: transaction.to), RLP.encode(amount: transaction.value),
      RLP.encode(bytes: transaction.data), accessList,
    ]
  }

  /// The signing payload `0x02 || rlp([chain id, nonce, ..., access list])` (EIP-2718 type 2).
  public static func signingPayload(_ transaction: EIP1559Transaction) -> [UInt8] {
    [0x02] + RLP.encode(list: unsignedItems(transaction))
  }

  /// Keccak-256 of the signing payload: the 32-byte digest the key signs.
  public static func signingHash(_ transaction: EIP1559Transaction) -> [UInt8] {
    Keccak256.hash(signingPayload(transaction))
  }

  /// The raw signed transaction `0x02 || rlp([..., y parity, r, s])`, as `eth_sendRawTransaction`
  /// takes it. `signature` is r || s (64 bytes), `yParity` 0 or 1.
  public static func signedTransaction(_ transaction: EIP1559Transaction, signature: [UInt8], yParity: UInt8) -> [UInt8]
  {
    let items =
      unsignedItems(transaction) + [
        RLP.encode(uint: UInt64(yParity)), RLP.encode(bytes: signature[0..<32].drop { $0 == 0 }),
        RLP.encode(bytes: signature[32..<64].drop { $0 == 0 }),
      ]
    return [0x02] + RLP.encode(list: items)
  }

  /// The EIP-191 (version 0x45) digest of a personal message:
  /// Keccak-256("\u{19}Ethereum Signed Message:\n" + decimal length + message).
  public static func personalMessageHash(_ message: [UInt8]) -> [UInt8] {
    Keccak256.hash(Array("\u{19}Ethereum Signed Message:\n\(message.count)".utf8) + message)
  }

  /// The Ethereum address (20 bytes) of a secp256k1 public key in any SEC 1 form.
  public static func address(ofPublicKey publicKey: [UInt8], secp: Secp256k1) throws -> [UInt8] {
    Array(Keccak256.hash(try secp.uncompressed(publicKey).dropFirst()).suffix(20))
  }
}
