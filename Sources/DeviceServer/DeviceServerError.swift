/// A failure to start or run the device server: its configuration, the device directory, the
/// socket. Refusals of calls are `VaultWireError`s (they travel over the wire); this is what the
/// process itself reports before it exits.
public struct DeviceServerError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The device cannot serve: no enrolment, no activation record, no Crypto User verifier.
    public static let deviceNotServable = Code("deviceNotServable")
    /// The device's lockout file is damaged (it is never written in place, so this is tampering
    /// or a disk fault): the device refuses to start rather than forget its lockouts.
    public static let lockoutFileInvalid = Code("lockoutFileInvalid")
    /// Writing the lockout file failed.
    public static let lockoutFileWrite = Code("lockoutFileWrite")
    /// The socket path is taken by a live server or by something that is not a socket.
    public static let socketInUse = Code("socketInUse")
    /// The listening address or the TLS files are not usable.
    public static let listenerInvalid = Code("listenerInvalid")
    /// The socket was not created with the permissions the device requires (0600).
    public static let socketPermissions = Code("socketPermissions")
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
