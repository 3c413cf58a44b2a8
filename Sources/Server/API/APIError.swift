import CustosAPI
import HTTPTypes

/// A refusal or failure the API answers with: an HTTP status, a machine-readable code, a
/// sentence, and where it applies the field that was wrong and the vault's own reason.
///
/// Handlers and the workflow throw it; `ErrorMiddleware` turns it into the `Error` body of
/// openapi.yaml. It never carries secret material (API keys, credentials, seeds).
public struct APIError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of refusal this is, with the HTTP status it travels as. Extensible: new codes
  /// are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public let status: Int

    public init(_ name: String, status: Int) {
      self.name = name
      self.status = status
    }

    public var description: String { name }

    /// The body is not JSON.
    public static let malformedJSON = Code("malformedJSON", status: 400)
    /// A field the schema does not have (`additionalProperties: false`).
    public static let unknownField = Code("unknownField", status: 400)
    /// A field of the wrong JSON type.
    public static let wrongType = Code("wrongType", status: 400)
    /// A required field is absent.
    public static let missingField = Code("missingField", status: 400)
    /// A value the schema or the domain does not accept (a range, a pattern, a rule of wallet data).
    public static let invalidValue = Code("invalidValue", status: 400)
    /// The body exceeds the server's limit.
    public static let bodyTooLarge = Code("bodyTooLarge", status: 413)
    /// A body that is not `application/json`.
    public static let unsupportedMediaType = Code("unsupportedMediaType", status: 400)
    /// An Accept header that allows no `application/json` answer.
    public static let notAcceptable = Code("notAcceptable", status: 400)
    /// No API key, or an unknown or revoked one.
    public static let unauthorized = Code("unauthorized", status: 401)
    /// The key lacks the operation's scope.
    public static let forbidden = Code("forbidden", status: 403)
    /// No wallet with that id.
    public static let walletNotFound = Code("walletNotFound", status: 404)
    /// No request with that id.
    public static let requestNotFound = Code("requestNotFound", status: 404)
    /// No such route.
    public static let notFound = Code("notFound", status: 404)
    /// The route exists, not with this method.
    public static let methodNotAllowed = Code("methodNotAllowed", status: 405)
    /// The wallet was removed.
    public static let walletRemoved = Code("walletRemoved", status: 409)
    /// The request is no longer awaiting approvals (completed, refused, expired, ...).
    public static let requestClosed = Code("requestClosed", status: 409)
    /// This approver has approved the request already.
    public static let alreadyApproved = Code("alreadyApproved", status: 409)
    /// The approval does not verify for this request.
    public static let approvalRefused = Code("approvalRefused", status: 422)
    /// The device is sealed: a quorum of unseal key holders must unseal it first.
    public static let deviceSealed = Code("deviceSealed", status: 503)
    /// The device cannot be reached (not running, stopping, or its socket is gone).
    public static let deviceUnavailable = Code("deviceUnavailable", status: 503)
    /// The server is settling pending vault calls with the device; try again shortly.
    public static let reconciling = Code("reconciling", status: 503)
    /// The server's tree and the device's root differ and no pending call explains it: wallet
    /// changes are refused until an operator looks.
    public static let diverged = Code("diverged", status: 503)
    /// The vault refused a call (the reason is in `vaultCode`).
    public static let vaultRefused = Code("vaultRefused", status: 502)
    /// A failure inside the server; the detail is in its log.
    public static let `internal` = Code("internal", status: 500)
  }

  public let code: Code
  public let message: String
  /// The field or parameter that was wrong, as a path.
  public let field: String?
  /// The vault's own reason (`thresholdNotMet`, `staleProof`, ...).
  public let vaultCode: String?

  public init(_ code: Code, _ message: String, field: String? = nil, vaultCode: String? = nil) {
    self.code = code
    self.message = message
    self.field = field
    self.vaultCode = vaultCode
  }

  public var description: String {
    "\(code)" + (field.map { " at \($0)" } ?? "") + ": \(message)" + (vaultCode.map { " (vault: \($0))" } ?? "")
  }

  /// The body of the response.
  public var body: Components.Schemas._Error {
    Components.Schemas._Error(code: code.name, message: message, field: field, vaultCode: vaultCode)
  }

  /// The HTTP status.
  public var status: HTTPResponse.Status { HTTPResponse.Status(code: code.status) }
}
