/// A failure of an approver tool: a key file, a rule file, or a request it refuses to approve.
/// Names what was wrong; never carries a private key.
public struct ApproverError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// A key file that cannot be read, is not a Custos approver key, or is open to others.
    public static let keyFileInvalid = Code("keyFileInvalid")
    /// The key file exists already (keygen never overwrites a key).
    public static let keyFileExists = Code("keyFileExists")
    /// A rule file that cannot be read or breaks a rule of its format.
    public static let ruleFileInvalid = Code("ruleFileInvalid")
    /// The envelope is not base64url, does not decode, or is not in deterministic form.
    public static let envelopeNotCanonical = Code("envelopeNotCanonical")
    /// What the server says about the request disagrees with the envelope it sent.
    public static let envelopeMismatch = Code("envelopeMismatch")
    /// The request does not name this approver, or enrols another key under its id.
    public static let notAnApprover = Code("notAnApprover")
    /// The request takes no approval now (decided, already approved by this approver, expired).
    public static let requestClosed = Code("requestClosed")
    /// The server answered with an error or could not be reached.
    public static let server = Code("server")
  }

  public let code: Code
  public let message: String

  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "\(code): \(message)" }
}
