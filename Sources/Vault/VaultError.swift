/// A failure of the vault itself (its state in the token, a refused request), as opposed to a
/// PKCS #11 call (`PKCS11Error`) or a refused change (`MerkleError`).
public struct VaultError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The partition holds no root state (never initialised).
    public static let rootStateMissing = Code("rootStateMissing")
    /// Root-state objects exist where a fresh partition was expected.
    public static let rootStateExists = Code("rootStateExists")
    /// No root-state slot is valid, or the slots contradict each other.
    public static let rootStateCorrupt = Code("rootStateCorrupt")
    /// A commit that is not the next epoch.
    public static let epochOutOfOrder = Code("epochOutOfOrder")
    /// Writing the token (or flushing it to disk) failed.
    public static let tokenWrite = Code("tokenWrite")
  }

  public let code: Code
  /// A sentence naming what was wrong. Never contains secret material.
  public let reason: String

  public init(_ code: Code, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  public var description: String { "\(code): \(reason)" }
}
