import Custody
import CustosAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import OpenAPIRuntime
import Synchronization

/// Checks the caller's API key and the operation's scope before the operation runs.
///
/// Keys are `custos-ak1-` and 43 base64url characters (256 random bits). The server keeps only
/// their SHA-256: a key of that entropy cannot be found from its hash by trying, so a slow
/// password hash (Argon2) would add nothing but its cost (about 0.3 s and 64 MiB per request at
/// the unseal shares' parameters) to every call. The approval routes need no key: the vault
/// judges approvals on their own (see openapi.yaml's `approvals` tag).
struct APIKeyMiddleware: ServerMiddleware {
  let keys: APIKeyCache

  /// The key of the call being handled (set for the handler's task).
  @TaskLocal static var caller: APIKeyRecord?

  /// The scope each operation needs; nil: no key (the approval routes).
  static func scope(of operationID: String) -> APIScope?? {
    switch operationID {
    case "getDeviceStatus": .some(.deviceRead)
    case "listWallets", "getWallet", "getWalletAddresses": .some(.walletsRead)
    case "createWallet", "removeWallet", "changeWallet": .some(.walletsWrite)
    case "listWalletRequests", "getRequest": .some(.requestsRead)
    case "createSigningRequest", "cancelRequest": .some(.requestsWrite)
    case "getApprovalRequest", "submitApproval": .some(nil)
    default: nil
    }
  }

  func intercept(
    _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
    next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
  ) async throws -> (HTTPResponse, HTTPBody?) {
    guard let needed = Self.scope(of: operationID) else {
      throw APIError(.internal, "operation \(operationID) has no scope assigned")
    }
    guard let scope = needed else { return try await next(request, body, metadata) }
    guard let header = request.headerFields[.authorization], header.hasPrefix("Bearer ") else {
      throw APIError(.unauthorized, "this operation needs an API key: Authorization: Bearer custos-ak1-...")
    }
    guard let key = try await keys.key(presented: String(header.dropFirst(7))) else {
      throw APIError(.unauthorized, "the API key is not one the server knows, or it was revoked")
    }
    guard key.scopes.contains(scope) else {
      throw APIError(.forbidden, "API key \(key.id) lacks the scope \(scope.rawValue) this operation needs")
    }
    return try await Self.$caller.withValue(key) { try await next(request, body, metadata) }
  }
}

/// API keys by their hash, cached in memory after the first lookup (a revoked key is dropped
/// from the cache by `custos-server keys revoke` only at the next start: revoke, then restart).
final class APIKeyCache: Sendable {
  private let repository: any APIKeyRepository
  private let cache = Mutex<[Hash256: APIKeyRecord]>([:])

  init(repository: any APIKeyRepository) {
    self.repository = repository
  }

  /// The live key whose text is `presented`, or nil.
  func key(presented: String) async throws -> APIKeyRecord? {
    guard presented.hasPrefix(APIKeys.prefix), presented.utf8.count < 128 else { return nil }
    let hash = Hash256.sha256(Array(presented.utf8))
    if let key = cache.withLock({ $0[hash] }) { return key }
    guard let key = try await repository.key(hash: hash), key.revokedAt == nil else { return nil }
    cache.withLock { $0[hash] = key }
    return key
  }
}

/// Making API keys.
public enum APIKeys {
  /// Every key starts with this (a scanner can recognise a leaked one).
  public static let prefix = "custos-ak1-"

  /// A new key (shown once) and the record the database keeps (its hash).
  public static func make(name: String, scopes: Set<APIScope>, at: Date) -> (key: String, record: APIKeyRecord) {
    var secret = SystemRandom.bytes(32)
    defer { SecretBytes.zero(&secret) }
    let key = prefix + Base64URL.encode(secret)
    let id = "ak_" + Hex.encode(SystemRandom.bytes(8))
    return (
      key,
      APIKeyRecord(
        id: id, name: name, keyHash: Hash256.sha256(Array(key.utf8)), scopes: scopes, createdAt: at, revokedAt: nil)
    )
  }
}

/// Limits request bodies and turns every error of an operation into openapi.yaml's `Error`
/// body: `APIError` as it is; the generated code's decoding errors (malformed JSON, unknown
/// fields, wrong types, missing fields, bad parameters) as 400 with the field's path; anything
/// else as 500 without detail (the detail goes to the log).
struct ErrorMiddleware: ServerMiddleware {
  let maxBodySize: Int
  let logger: Logger

  func intercept(
    _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
    next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
  ) async throws -> (HTTPResponse, HTTPBody?) {
    do {
      var limited: HTTPBody? = nil
      if let body {
        if case .known(let length) = body.length, length > maxBodySize {
          throw APIError(.bodyTooLarge, "the body has \(length) bytes; at most \(maxBodySize) are accepted")
        }
        let bytes: [UInt8]
        do {
          bytes = try await [UInt8](collecting: body, upTo: maxBodySize)
        } catch {
          throw APIError(.bodyTooLarge, "the body exceeds \(maxBodySize) bytes")
        }
        limited = bytes.isEmpty && request.method == .get ? nil : HTTPBody(bytes)
      }
      return try await next(request, limited, metadata)
    } catch {
      let apiError = Self.apiError(error, logger: logger, operationID: operationID)
      return Self.response(apiError)
    }
  }

  /// The response carrying `error`.
  static func response(_ error: APIError) -> (HTTPResponse, HTTPBody?) {
    let data = (try? encoder.encode(error.body)) ?? Data(#"{"code":"internal","message":"internal"}"#.utf8)
    var fields = HTTPFields()
    fields[.contentType] = "application/json; charset=utf-8"
    return (HTTPResponse(status: error.status, headerFields: fields), HTTPBody(Array(data)))
  }

  static let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return encoder
  }()

  static func apiError(_ error: any Error, logger: Logger, operationID: String) -> APIError {
    var underlying: any Error = error
    var cause = ""
    if let server = error as? ServerError {
      underlying = server.underlyingError
      cause = server.causeDescription
    }
    if let api = underlying as? APIError { return api }
    if let decoding = underlying as? DecodingError { return apiError(decoding) }
    let text = "\(underlying)"
    if text.contains("Unexpected content type") || text.contains("content type") {
      return APIError(.unsupportedMediaType, "send a JSON body with Content-Type: application/json")
    }
    if text.contains("Missing required request body") {
      return APIError(.missingField, "this operation needs a JSON body")
    }
    if text.contains("Failed to decode") || cause.contains("decode") {
      return APIError(.invalidValue, "a parameter does not have the type openapi.yaml gives it: \(text)")
    }
    logger.error("unhandled error", metadata: ["operation": "\(operationID)", "error": "\(error)"])
    return APIError(.internal, "the server failed handling \(operationID); see its log")
  }

  static func apiError(_ error: DecodingError) -> APIError {
    func path(_ codingPath: [any CodingKey]) -> String? {
      var text = ""
      for key in codingPath {
        if let index = key.intValue {
          text += "[\(index)]"
        } else {
          text += (text.isEmpty ? "" : ".") + key.stringValue
        }
      }
      return text.isEmpty ? nil : text
    }
    switch error {
    case .keyNotFound(let key, let context):
      let field = path(context.codingPath + [key])
      return APIError(.missingField, "the field \(field ?? key.stringValue) is required", field: field)
    case .typeMismatch(let type, let context):
      return APIError(
        .wrongType, "expected \(jsonType(type)): \(context.debugDescription)", field: path(context.codingPath))
    case .valueNotFound(let type, let context):
      return APIError(.wrongType, "expected \(jsonType(type)), found null", field: path(context.codingPath))
    case .dataCorrupted(let context):
      if context.debugDescription.contains("Additional properties are disabled") {
        return APIError(
          .unknownField, "the field \(path(context.codingPath) ?? "?") is not part of this schema",
          field: path(context.codingPath))
      }
      if context.codingPath.isEmpty {
        return APIError(.malformedJSON, "the body is not valid JSON")
      }
      return APIError(.invalidValue, context.debugDescription, field: path(context.codingPath))
    @unknown default:
      return APIError(.malformedJSON, "the body does not decode")
    }
  }

  static func jsonType(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Bool.Type: "a boolean"
    case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type, is Double.Type: "a number"
    case is [Any].Type: "an array"
    default: "\(type)"
    }
  }
}

/// Hummingbird's own refusals (no such route, wrong method, a body it cannot read) as the API's
/// `Error` body.
struct RouteErrorMiddleware<Context: RequestContext>: RouterMiddleware {
  func handle(
    _ request: Request, context: Context, next: (Request, Context) async throws -> Response
  ) async throws
    -> Response
  {
    do {
      return try await next(request, context)
    } catch let error as HTTPError {
      let code: APIError.Code =
        switch error.status {
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .contentTooLarge: .bodyTooLarge
        default: APIError.Code("httpError", status: Int(error.status.code))
        }
      return Self.response(APIError(code, error.body ?? "\(error.status.reasonPhrase)"))
    }
  }

  /// The router's response carrying `error`, as `ErrorMiddleware.response` makes it.
  static func response(_ error: APIError) -> Response {
    let (head, _) = ErrorMiddleware.response(error)
    let data = (try? ErrorMiddleware.encoder.encode(error.body)) ?? Data()
    return Response(status: head.status, headers: head.headerFields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
  }
}
