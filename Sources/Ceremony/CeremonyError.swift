/// A ceremony that could not run or did not finish: which step, and why.
///
/// When a ceremony fails, nothing it was creating is left behind (the device, share files, the
/// credential file), and an existing device is never touched.
public struct CeremonyError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The ceremony script is not valid.
    public static let scriptInvalid = Code("scriptInvalid")
    /// The participants file is not valid.
    public static let participantsInvalid = Code("participantsInvalid")
    /// The device directory (or an output file) exists already.
    public static let alreadyExists = Code("alreadyExists")
    /// An officer's token refused their PIN.
    public static let wrongPIN = Code("wrongPIN")
    /// An officer acted in a role they are not enrolled for.
    public static let wrongRole = Code("wrongRole")
    /// Someone who is not an enrolled participant acted.
    public static let unknownParticipant = Code("unknownParticipant")
    /// Fewer distinct participants than the step's quorum.
    public static let missingQuorum = Code("missingQuorum")
    /// The same participant was presented twice for one quorum.
    public static let reusedParticipant = Code("reusedParticipant")
    /// An unseal key holder's password did not open their share.
    public static let wrongPassword = Code("wrongPassword")
    /// A signature did not verify.
    public static let signatureInvalid = Code("signatureInvalid")
    /// The step's action failed.
    public static let actionFailed = Code("actionFailed")
  }

  public let code: Code
  /// The step that failed (nil before the first step).
  public let step: Int?
  /// The step's title.
  public let stepTitle: String?
  /// A sentence naming what was wrong. Never contains a PIN, password or secret.
  public let reason: String

  public init(_ code: Code, step: CeremonyStep? = nil, _ reason: String) {
    self.code = code
    self.step = step?.number
    self.stepTitle = step?.title
    self.reason = reason
  }

  public var description: String {
    guard let step else { return reason }
    return "step \(step) (\(stepTitle ?? "")): \(reason)"
  }
}
