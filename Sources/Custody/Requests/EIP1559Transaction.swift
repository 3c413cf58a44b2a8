/// The typed fields of an EIP-1559 (type 2) Ethereum transaction: what approvers approve and
/// what the vault itself marshals (RLP) and signs, so the policy judges what is really signed.
///
/// Contract creation (no `to`) is not offered in this version: every transaction names the
/// account it pays or calls, and the destination allowlist judges it.
public struct EIP1559Transaction: Sendable, Hashable {
  /// EIP-155 chain id (1 for Ethereum mainnet), at least 1.
  public var chainID: UInt64
  /// The sender account's transaction nonce (the chain's, not the vault's request nonce).
  public var nonce: UInt64
  /// Tip per gas to the block producer, in wei.
  public var maxPriorityFeePerGas: Amount
  /// Most paid per gas (base fee + tip), in wei; at least the tip, as EIP-1559 requires.
  public var maxFeePerGas: Amount
  public var gasLimit: UInt64
  /// The 20-byte account paid or called.
  public var to: [UInt8]
  /// Wei transferred.
  public var value: Amount
  /// Call data (at most `maxDataLength` bytes).
  public var data: [UInt8]
  /// EIP-2930 access list (at most `maxAccessListEntries` entries).
  public var accessList: [AccessListEntry]

  /// Largest call data the vault signs (the envelope's CBOR limit allows 64 KiB strings).
  public static let maxDataLength = 65_536
  /// Most access-list entries, and most storage keys in one entry.
  public static let maxAccessListEntries = 256

  public init(
    chainID: UInt64, nonce: UInt64, maxPriorityFeePerGas: Amount, maxFeePerGas: Amount, gasLimit: UInt64,
    to: [UInt8], value: Amount, data: [UInt8] = [], accessList: [AccessListEntry] = []
  ) {
    self.chainID = chainID
    self.nonce = nonce
    self.maxPriorityFeePerGas = maxPriorityFeePerGas
    self.maxFeePerGas = maxFeePerGas
    self.gasLimit = gasLimit
    self.to = to
    self.value = value
    self.data = data
    self.accessList = accessList
  }

  /// One EIP-2930 access-list entry: an account and storage slots of it.
  public struct AccessListEntry: Sendable, Hashable {
    /// 20 bytes.
    public var address: [UInt8]
    /// 32 bytes each.
    public var storageKeys: [[UInt8]]

    public init(address: [UInt8], storageKeys: [[UInt8]] = []) {
      self.address = address
      self.storageKeys = storageKeys
    }
  }

  /// The transaction as the CBOR map of a `sign-eip1559` request (not validated):
  /// `{0: chain id, 1: nonce, 2: max priority fee, 3: max fee, 4: gas limit, 5: to, 6: value,
  /// 7: data, 8: [[address, [storage key, ...]], ...]}`, amounts as `Amount` byte strings.
  public var cbor: CBOR {
    let fields: [(UInt64, CBOR)] = [
      (0, .unsigned(chainID)), (1, .unsigned(nonce)), (2, amountCBOR(maxPriorityFeePerGas)),
      (3, amountCBOR(maxFeePerGas)), (4, .unsigned(gasLimit)), (5, .bytes(to)), (6, amountCBOR(value)),
      (7, .bytes(data)),
      (8, .array(accessList.map { .array([.bytes($0.address), .array($0.storageKeys.map(CBOR.bytes))]) })),
    ]
    return .map(fields)
  }

  /// Checks the rules every signed transaction meets.
  func validate(_ path: FieldPath) throws(WalletDataError) {
    guard chainID >= 1 else {
      throw WalletDataError(.invalidValue, field: path["chainID"].text, "chain ids start at 1")
    }
    guard to.count == 20 else {
      throw WalletDataError(.invalidValue, field: path["to"].text, "an address has 20 bytes, not \(to.count)")
    }
    guard maxPriorityFeePerGas <= maxFeePerGas else {
      throw WalletDataError(
        .invalidValue, field: path["maxPriorityFeePerGas"].text,
        "the tip \(maxPriorityFeePerGas) exceeds the max fee \(maxFeePerGas) (EIP-1559 makes such a transaction invalid)"
      )
    }
    guard data.count <= EIP1559Transaction.maxDataLength else {
      throw WalletDataError(
        .invalidValue, field: path["data"].text, "at most \(EIP1559Transaction.maxDataLength) bytes of call data")
    }
    guard accessList.count <= EIP1559Transaction.maxAccessListEntries else {
      throw WalletDataError(
        .invalidValue, field: path["accessList"].text,
        "at most \(EIP1559Transaction.maxAccessListEntries) access-list entries, not \(accessList.count)")
    }
    for (index, entry) in accessList.enumerated() {
      guard entry.address.count == 20 else {
        throw WalletDataError(
          .invalidValue, field: path["accessList", index]["address"].text, "an address has 20 bytes")
      }
      guard entry.storageKeys.count <= EIP1559Transaction.maxAccessListEntries,
        entry.storageKeys.allSatisfy({ $0.count == 32 })
      else {
        throw WalletDataError(
          .invalidValue, field: path["accessList", index]["storageKeys"].text,
          "at most \(EIP1559Transaction.maxAccessListEntries) storage keys of 32 bytes each")
      }
    }
  }
}
