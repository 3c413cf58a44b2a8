/// Ethereum account addresses as text: the EIP-55 mixed-case checksum, used by the vault for
/// the addresses it derives and by the request renderer for the addresses approvers read.
public enum EthereumAddress {
  /// The EIP-55 text (0x + 40 mixed-case hex digits) of a 20-byte address: a letter is upper
  /// case when the matching nibble of Keccak-256 of the lower-case hex is 8 or more.
  public static func checksummed(_ address: some Collection<UInt8>) -> String {
    let lower = Array(Hex.encode(address).utf8)
    let hash = Keccak256.hash(lower)
    var output = Array("0x".utf8)
    output.reserveCapacity(2 + lower.count)
    for (index, character) in lower.enumerated() {
      let nibble = (hash[index / 2] >> (index % 2 == 0 ? 4 : 0)) & 0x0F
      let isLetter = character >= UInt8(ascii: "a")
      output.append(isLetter && nibble >= 8 ? character - 32 : character)
    }
    return String(decoding: output, as: UTF8.self)
  }

  /// The 20 bytes of `text` when it is 0x and 40 hex digits whose letters are all lower case,
  /// all upper case, or carry a correct EIP-55 checksum (as EIP-55 says); nil otherwise.
  public static func parse(_ text: some StringProtocol) -> [UInt8]? {
    let text = String(text)
    guard text.hasPrefix("0x"), text.utf8.count == 42, let bytes = Hex.decode(text.dropFirst(2)) else { return nil }
    let digits = text.dropFirst(2)
    if digits == digits.lowercased() || digits == digits.uppercased() { return bytes }
    return checksummed(bytes) == text ? bytes : nil
  }
}
