import Foundation
import GRPCCore

/// The metadata keys of the wire (vault.proto's header).
public enum WireMetadata {
  /// The session token Login returned, in the metadata of every call that needs a session.
  public static let session = "custos-session"
  /// The reason of a refusal, a `VaultWireError.Code` name, in the trailing metadata.
  public static let error = "custos-error"
  /// While locked out: milliseconds until the next attempt counts.
  public static let retryAfter = "custos-retry-after-ms"
  /// After a refused credential or share: failures left before the lockout starts.
  public static let attemptsBeforeLockout = "custos-attempts-before-lockout"
  /// The vault's own reason for refusing a request (a `RequestError` code name such as
  /// `thresholdNotMet` or `staleProof`), beside the wire's `custos-error`.
  public static let reason = "custos-reason"
}

/// A refusal or failure of a device call, the same value on both sides of the wire: the device
/// throws it, the gRPC status and trailing metadata carry it, the client rebuilds it.
///
/// Never carries secret material: messages name what was wrong, not the credential, password or
/// share that was.
public struct VaultWireError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of refusal this is. Extensible: new codes are added as static members, each with
  /// the gRPC status it travels as.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    /// The gRPC status code the device answers with.
    public let status: RPCError.Code

    public init(_ name: String, status: RPCError.Code) {
      self.name = name
      self.status = status
    }

    public var description: String { name }

    /// The device is SEALED: a quorum of unseal key holders has not unsealed it yet.
    public static let sealed = Code("sealed", status: .failedPrecondition)
    /// An unseal share was submitted to a device that is already READY.
    public static let alreadyUnsealed = Code("alreadyUnsealed", status: .failedPrecondition)
    /// The device is shutting down: new calls are refused.
    public static let stopping = Code("stopping", status: .unavailable)
    /// The call needs a session: none was given, or it is unknown, expired or closed.
    public static let sessionRequired = Code("sessionRequired", status: .unauthenticated)
    /// The Crypto User credential is not the one enrolled (counted against the lockout).
    public static let wrongCredential = Code("wrongCredential", status: .unauthenticated)
    /// A share file does not open with the password given (counted against the lockout).
    public static let wrongPassword = Code("wrongPassword", status: .permissionDenied)
    /// Too many failures: attempts are refused unread until the lockout ends.
    public static let lockedOut = Code("lockedOut", status: .resourceExhausted)
    /// A share of another device or holder, or given twice (not counted: no guess was made).
    public static let shareRefused = Code("shareRefused", status: .invalidArgument)
    /// The shares of a full quorum do not combine into the device's secret (counted).
    public static let activationFailed = Code("activationFailed", status: .permissionDenied)
    /// The request does not parse or does not fit (bad bytes, a path, a missing field).
    public static let invalidArgument = Code("invalidArgument", status: .invalidArgument)
    /// The vault refused the request (approvals, policy, a proof against a stale root).
    public static let vaultRefused = Code("vaultRefused", status: .permissionDenied)
    /// The device holds as many sessions as it allows; close one or wait for one to time out.
    public static let tooManySessions = Code("tooManySessions", status: .resourceExhausted)
    /// The device failed inside (its token, its files); the detail is in its log.
    public static let deviceFailure = Code("deviceFailure", status: .internalError)
    /// Client side: the device answered that it has no such method or service.
    public static let unknownMethod = Code("unknownMethod", status: .unimplemented)
    /// Client side: the device could not be reached, or the connection broke.
    public static let unreachable = Code("unreachable", status: .unavailable)
    /// Client side: the device did not answer within the call's timeout. A change may still
    /// have been applied: its result is to be asked again (GetResult) or reconciled.
    public static let timedOut = Code("timedOut", status: .deadlineExceeded)
    /// Client side: a status the contract does not define.
    public static let unexpected = Code("unexpected", status: .unknown)

    /// Every code the device sends, to rebuild one from its name.
    public static let deviceCodes: [Code] = [
      .sealed, .alreadyUnsealed, .stopping, .sessionRequired, .wrongCredential, .wrongPassword, .lockedOut,
      .shareRefused, .activationFailed, .invalidArgument, .vaultRefused, .tooManySessions,
      .deviceFailure,
    ]
  }

  public let code: Code
  /// A sentence naming what was wrong.
  public let message: String
  /// The vault's own reason when it refused a request (`RequestError.Code` names:
  /// `thresholdNotMet`, `staleProof`, ...); nil for refusals of the wire itself.
  public let reason: String?
  /// While locked out: how long until the next attempt counts.
  public let retryAfter: Duration?
  /// After a counted failure: how many more the device allows before a lockout.
  public let attemptsBeforeLockout: Int?
  /// The gRPC status the call ended with.
  public let status: RPCError.Code

  public init(
    _ code: Code, _ message: String, reason: String? = nil, retryAfter: Duration? = nil,
    attemptsBeforeLockout: Int? = nil, status: RPCError.Code? = nil
  ) {
    self.code = code
    self.message = message
    self.reason = reason
    self.retryAfter = retryAfter
    self.attemptsBeforeLockout = attemptsBeforeLockout
    self.status = status ?? code.status
  }

  public var description: String { "\(code): \(message)" }

  /// The gRPC error the device answers with: the code's status, the message, and the reason and
  /// figures in metadata (sent as trailers).
  public var rpcError: RPCError {
    var metadata = Metadata()
    metadata.addString(code.name, forKey: WireMetadata.error)
    if let reason { metadata.addString(reason, forKey: WireMetadata.reason) }
    if let retryAfterMilliseconds {
      metadata.addString(String(retryAfterMilliseconds), forKey: WireMetadata.retryAfter)
    }
    if let attemptsBeforeLockout {
      metadata.addString(String(attemptsBeforeLockout), forKey: WireMetadata.attemptsBeforeLockout)
    }
    return RPCError(code: code.status, message: message, metadata: metadata)
  }

  /// `retryAfter` in whole milliseconds (at least 1), as the wire carries it.
  private var retryAfterMilliseconds: Int64? {
    retryAfter.map { max($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000, 1) }
  }

  /// The refusal of one call on a Pipeline stream: the same fields a single call's status and
  /// trailers carry.
  public var refusal: Custos_Vault_V1_CallRefusal {
    var refusal = Custos_Vault_V1_CallRefusal()
    refusal.status = UInt32(status.rawValue)
    refusal.message = message
    refusal.error = code.name
    refusal.reason = reason ?? ""
    refusal.retryAfterMs = retryAfterMilliseconds ?? 0
    refusal.attemptsBeforeLockout = attemptsBeforeLockout.map { Int32(clamping: $0) } ?? -1
    return refusal
  }

  /// Rebuilds the device's refusal of one Pipeline call.
  public init(_ refusal: Custos_Vault_V1_CallRefusal) {
    let status = Status.Code(rawValue: Int(refusal.status)).flatMap { RPCError.Code($0) } ?? .unknown
    self.init(
      Code.deviceCodes.first { $0.name == refusal.error } ?? Self.clientCode(for: status), refusal.message,
      reason: refusal.reason.isEmpty ? nil : refusal.reason,
      retryAfter: refusal.retryAfterMs > 0 ? .milliseconds(refusal.retryAfterMs) : nil,
      attemptsBeforeLockout: refusal.attemptsBeforeLockout >= 0 ? Int(refusal.attemptsBeforeLockout) : nil,
      status: status)
  }

  /// The client-side code of a status that carries no `custos-error`.
  private static func clientCode(for status: RPCError.Code) -> Code {
    switch status {
    case .unimplemented: .unknownMethod
    case .unavailable: .unreachable
    case .deadlineExceeded: .timedOut
    default: .unexpected
    }
  }

  /// Rebuilds the device's refusal from a gRPC error; a status without `custos-error` (an
  /// unknown method, a broken connection) gets a client-side code.
  public init(_ error: RPCError) {
    let name = error.metadata[stringValues: WireMetadata.error].first(where: { _ in true })
    let code = name.flatMap { name in Code.deviceCodes.first { $0.name == name } } ?? Self.clientCode(for: error.code)
    let retry = error.metadata[stringValues: WireMetadata.retryAfter].first(where: { _ in true }).flatMap { Int64($0) }
    let left = error.metadata[stringValues: WireMetadata.attemptsBeforeLockout].first(where: { _ in true }).flatMap {
      Int($0)
    }
    let reason = error.metadata[stringValues: WireMetadata.reason].first(where: { _ in true })
    self.init(
      code, error.message, reason: reason.map { String($0) }, retryAfter: retry.map { .milliseconds($0) },
      attemptsBeforeLockout: left, status: error.code)
  }

  /// Any error of a call, as a `VaultWireError`.
  public static func from(_ error: any Error) -> VaultWireError {
    switch error {
    case let wire as VaultWireError: return wire
    case let rpc as RPCError: return VaultWireError(rpc)
    case let runtime as RuntimeError:
      return VaultWireError(.unreachable, "the connection to the device failed: \(runtime.message)")
    default: return VaultWireError(.unexpected, "\(error)")
    }
  }
}
