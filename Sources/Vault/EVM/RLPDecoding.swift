import Custody

/// A decoded RLP item: a byte string or a list of items.
public enum RLPItem: Hashable, Sendable {
  case bytes([UInt8])
  case list([RLPItem])

  /// The item encoded again (the decoder accepts only canonical encodings, so this gives back
  /// the exact bytes it was decoded from).
  public var encoded: [UInt8] {
    switch self {
    case .bytes(let bytes): RLP.encode(bytes: bytes)
    case .list(let items): RLP.encode(list: items.map(\.encoded))
    }
  }
}

/// Why bytes are not one canonical RLP item.
public struct RLPError: Error, Hashable, Sendable, CustomStringConvertible {
  public let reason: String
  /// The byte offset where decoding stopped.
  public let offset: Int
  public var description: String { "not canonical RLP at byte \(offset): \(reason)" }
}

extension RLP {
  /// Decodes exactly one item filling `bytes`, refusing non-canonical forms (a single byte
  /// below 0x80 wrapped in a string header, long headers for short payloads, lengths with
  /// leading zeros), truncation, trailing bytes and nesting deeper than `maxDepth`.
  public static func decode(_ bytes: [UInt8], maxDepth: Int = 32) throws(RLPError) -> RLPItem {
    var offset = 0
    let item = try decodeItem(bytes, &offset, end: bytes.count, depth: maxDepth)
    guard offset == bytes.count else {
      throw RLPError(reason: "\(bytes.count - offset) bytes after the item", offset: offset)
    }
    return item
  }

  private static func decodeItem(
    _ bytes: [UInt8], _ offset: inout Int, end: Int, depth: Int
  ) throws(RLPError)
    -> RLPItem
  {
    guard depth > 0 else { throw RLPError(reason: "nested too deep", offset: offset) }
    guard offset < end else { throw RLPError(reason: "an item is missing", offset: offset) }
    let start = offset
    let prefix = bytes[offset]
    offset += 1
    switch prefix {
    case 0x00...0x7F:
      return .bytes([prefix])
    case 0x80...0xBF:
      let length = try payloadLength(bytes, &offset, prefix: prefix, shortBase: 0x80, end: end)
      let payload = Array(bytes[offset..<offset + length])
      if length == 1 && payload[0] < 0x80 {
        throw RLPError(reason: "a single byte below 0x80 must stand for itself", offset: start)
      }
      offset += length
      return .bytes(payload)
    default:
      let length = try payloadLength(bytes, &offset, prefix: prefix, shortBase: 0xC0, end: end)
      let listEnd = offset + length
      var items = [RLPItem]()
      while offset < listEnd {
        items.append(try decodeItem(bytes, &offset, end: listEnd, depth: depth - 1))
      }
      return .list(items)
    }
  }

  /// The payload length after a string (0x80) or list (0xC0) prefix, checked against `end`.
  private static func payloadLength(
    _ bytes: [UInt8], _ offset: inout Int, prefix: UInt8, shortBase: UInt8, end: Int
  ) throws(RLPError) -> Int {
    let start = offset - 1
    var length: Int
    if prefix <= shortBase + 55 {
      length = Int(prefix - shortBase)
    } else {
      let lengthOfLength = Int(prefix - shortBase - 55)
      guard offset + lengthOfLength <= end else { throw RLPError(reason: "the length is cut off", offset: start) }
      guard bytes[offset] != 0 else { throw RLPError(reason: "a length with a leading zero", offset: start) }
      guard lengthOfLength <= 4 else { throw RLPError(reason: "a length of more than 4 bytes", offset: start) }
      length = 0
      for _ in 0..<lengthOfLength {
        length = length << 8 | Int(bytes[offset])
        offset += 1
      }
      guard length > 55 else {
        throw RLPError(reason: "a long header for a payload of \(length) bytes", offset: start)
      }
    }
    guard offset + length <= end else {
      throw RLPError(reason: "the payload of \(length) bytes is cut off", offset: start)
    }
    return length
  }
}

extension EthereumSigning {
  /// The sender (20-byte address) of a raw signed EIP-1559 transaction, recovered from its
  /// signature as a chain does: 0x02 || RLP of the nine transaction fields and y parity, r, s.
  public static func sender(ofSignedTransaction raw: [UInt8], secp: Secp256k1) throws -> [UInt8] {
    guard raw.first == 0x02 else {
      throw VaultError(.invalidEncoding, "not an EIP-1559 transaction: the type byte is not 0x02")
    }
    let item: RLPItem
    do {
      item = try RLP.decode(Array(raw.dropFirst()))
    } catch {
      throw VaultError(.invalidEncoding, "the transaction is \(error)")
    }
    guard case .list(let items) = item, items.count == 12 else {
      throw VaultError(.invalidEncoding, "a signed EIP-1559 transaction is a list of 12 items")
    }
    guard case .bytes(let parity) = items[9], case .bytes(let r) = items[10], case .bytes(let s) = items[11],
      parity.count <= 1, parity.first ?? 0 <= 1, r.count <= 32, s.count <= 32
    else {
      throw VaultError(.invalidEncoding, "the signature fields (y parity, r, s) are not well formed")
    }
    let payload = [0x02] + RLP.encode(list: items[0..<9].map(\.encoded))
    let signature = [UInt8](repeating: 0, count: 32 - r.count) + r + [UInt8](repeating: 0, count: 32 - s.count) + s
    guard
      let publicKey = secp.recoverECDSA(
        signature: signature, recoveryID: parity.first ?? 0, digest: Keccak256.hash(payload))
    else {
      throw VaultError(.invalidKey, "no public key recovers from the transaction's signature")
    }
    return try address(ofPublicKey: publicKey, secp: secp)
  }
}
