/// One step of a derivation path: an index below 2^31, hardened or not.
public struct ChildIndex: Hashable, Sendable, CustomStringConvertible {
  /// The index as BIP-32 serialises it (hardened indices have the top bit set).
  public let rawValue: UInt32

  public static let hardenedBit: UInt32 = 0x8000_0000

  public init(rawValue: UInt32) { self.rawValue = rawValue }

  /// A normal child `index` (below 2^31).
  public static func normal(_ index: UInt32) -> ChildIndex {
    precondition(index < hardenedBit, "child index \(index) is not below 2^31")
    return ChildIndex(rawValue: index)
  }

  /// A hardened child `index` (below 2^31).
  public static func hardened(_ index: UInt32) -> ChildIndex {
    precondition(index < hardenedBit, "child index \(index) is not below 2^31")
    return ChildIndex(rawValue: index | hardenedBit)
  }

  public var isHardened: Bool { rawValue & ChildIndex.hardenedBit != 0 }
  /// The index without the hardened bit.
  public var index: UInt32 { rawValue & ~ChildIndex.hardenedBit }
  public var description: String { isHardened ? "\(index)'" : "\(index)" }
}

/// A BIP-32 path such as `m/44'/60'/0'/0/0`, parsed strictly: it starts with `m`, components
/// are decimal indices below 2^31 without leading zeros, hardened ones end in `'` or `h`, and
/// nothing else is accepted (no spaces, no empty components, no trailing slash, at most 255
/// levels as the depth byte allows).
public struct DerivationPath: Hashable, Sendable, CustomStringConvertible {
  public let components: [ChildIndex]

  public init(_ components: [ChildIndex]) { self.components = components }

  /// Parses `text`; the error names the offending component.
  public init(parsing text: String) throws {
    func refuse(_ why: String) -> VaultError {
      VaultError(.invalidPath, "derivation path '\(text)': \(why)")
    }
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.first == "m" else { throw refuse("must start with 'm'") }
    guard parts.count - 1 <= 255 else { throw refuse("more than 255 levels") }
    var components = [ChildIndex]()
    for (position, part) in parts.dropFirst().enumerated() {
      let number = position + 1
      guard !part.isEmpty else { throw refuse("component \(number) is empty") }
      var digits = Substring(part)
      var hardened = false
      if let last = digits.last, last == "'" || last == "h" {
        hardened = true
        digits = digits.dropLast()
      }
      guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
        throw refuse("component \(number) '\(part)' is not a decimal index with an optional ' or h")
      }
      guard digits == "0" || digits.first != "0" else {
        throw refuse("component \(number) '\(part)' has a leading zero")
      }
      guard digits.count <= 10, let value = UInt64(digits), value < UInt64(ChildIndex.hardenedBit) else {
        throw refuse("component \(number) '\(part)' is not below 2^31")
      }
      components.append(hardened ? .hardened(UInt32(value)) : .normal(UInt32(value)))
    }
    self.components = components
  }

  /// `m/44'/60'/0'/0/0`.
  public var description: String {
    (["m"] + components.map(\.description)).joined(separator: "/")
  }
}
