import Custody
import CustosAPI
import Foundation
import HTTPTypes
import OpenAPIRuntime
import OpenAPIURLSession

/// The few routes of the custody API an approver's tool uses, through the generated client of
/// `openapi.yaml` (CustosAPI) over URLSession: the approval routes (no API key: approvers have
/// none) and, for `--auto`, the wallet's request list (a key with `requests:read`).
public struct CustodyServerClient: Sendable {
  let client: Client
  let server: String

  /// A client of the server at `url` (`http://127.0.0.1:8080`); `apiKey` only for `pending`.
  public init(url: String, apiKey: String? = nil) throws(ApproverError) {
    guard let parsed = URL(string: url), let scheme = parsed.scheme, ["http", "https"].contains(scheme),
      parsed.host != nil
    else { throw ApproverError(.server, "'\(url)' is not an http(s) URL of a custody server") }
    server = url
    client = Client(
      serverURL: parsed, configuration: .custos, transport: URLSessionTransport(),
      middlewares: apiKey.map { [BearerKey(key: $0)] } ?? [])
  }

  /// The request as the approval route serves it.
  public func servedRequest(_ requestID: String) async throws(ApproverError) -> ServedRequest {
    let output: Operations.GetApprovalRequest.Output
    do {
      output = try await client.getApprovalRequest(path: .init(requestId: requestID))
    } catch {
      throw unreachable(error)
    }
    switch output {
    case .ok(let ok):
      guard case .json(let body) = ok.body else { throw ApproverError(.server, "the server answered without JSON") }
      return ServedRequest(
        id: body.id, kind: body.kind, walletID: body.walletId.flatMap { UInt64(exactly: $0) },
        status: body.status.rawValue, envelope: body.envelope, challenge: body.challenge,
        approvers: body.approvers.map {
          ServedRequest.ListedApprover(
            id: $0.id, isPasskey: $0.kind == .passkey, approved: $0.approved,
            credentialID: $0.credentialId.flatMap { Base64URL.decode($0) }, rpID: $0.rpId)
        })
    case .badRequest(let answer): throw refusal(400, try? answer.body.json)
    case .notFound(let answer): throw refusal(404, try? answer.body.json)
    case .internalServerError(let answer): throw refusal(500, try? answer.body.json)
    case .undocumented(let status, _): throw refusal(status, nil)
    }
  }

  /// What the server said after an approval was posted.
  public struct Receipt: Sendable {
    public var status: String
    public var approvals: Int
    public var threshold: Int
    public var signedTransaction: String?
    public var signature: String?
    public var failure: String?
  }

  /// Posts `approval` (its canonical encoding) to the request's approval route.
  public func submit(_ approval: Approval, to requestID: String) async throws(ApproverError) -> Receipt {
    let encoded: [UInt8]
    do {
      encoded = try approval.encoded()
    } catch {
      throw ApproverError(.server, "cannot encode the approval: \(error)")
    }
    let output: Operations.SubmitApproval.Output
    do {
      output = try await client.submitApproval(
        path: .init(requestId: requestID), body: .json(.init(encoded: Base64URL.encode(encoded))))
    } catch {
      throw unreachable(error)
    }
    switch output {
    case .ok(let ok):
      guard case .json(let body) = ok.body else { throw ApproverError(.server, "the server answered without JSON") }
      return Receipt(
        status: body.status.rawValue, approvals: body.approvals, threshold: body.threshold,
        signedTransaction: body.result?.signedTransaction, signature: body.result?.signature,
        failure: body.failure.map { $0.code + ($0.vaultCode.map { " (\($0))" } ?? "") + ": " + $0.message })
    case .badRequest(let answer): throw refusal(400, try? answer.body.json)
    case .notFound(let answer): throw refusal(404, try? answer.body.json)
    case .conflict(let answer): throw refusal(409, try? answer.body.json)
    case .contentTooLarge(let answer): throw refusal(413, try? answer.body.json)
    case .unprocessableContent(let answer): throw refusal(422, try? answer.body.json)
    case .internalServerError(let answer): throw refusal(500, try? answer.body.json)
    case .undocumented(let status, _): throw refusal(status, nil)
    }
  }

  /// A request listed for a wallet: its id and whom it still waits for.
  public struct Listed: Sendable, Hashable {
    public var id: String
    public var status: String
    public var awaiting: [String]
  }

  /// The wallet's newest requests (at most `limit`); needs an API key with `requests:read`.
  public func requests(ofWallet walletID: UInt64, limit: Int = 100) async throws(ApproverError) -> [Listed] {
    let output: Operations.ListWalletRequests.Output
    do {
      output = try await client.listWalletRequests(path: .init(walletId: Int64(walletID)), query: .init(limit: limit))
    } catch {
      throw unreachable(error)
    }
    switch output {
    case .ok(let ok):
      guard case .json(let body) = ok.body else { throw ApproverError(.server, "the server answered without JSON") }
      return body.requests.map { Listed(id: $0.id, status: $0.status.rawValue, awaiting: $0.awaiting) }
    case .badRequest(let answer): throw refusal(400, try? answer.body.json)
    case .unauthorized(let answer): throw refusal(401, try? answer.body.json)
    case .forbidden(let answer): throw refusal(403, try? answer.body.json)
    case .notFound(let answer): throw refusal(404, try? answer.body.json)
    case .internalServerError(let answer): throw refusal(500, try? answer.body.json)
    case .undocumented(let status, _): throw refusal(status, nil)
    }
  }

  private func refusal(_ status: Int, _ body: Components.Schemas._Error?) -> ApproverError {
    guard let body else { return ApproverError(.server, "\(server) answered HTTP \(status)") }
    return ApproverError(
      .server,
      "\(server) answered HTTP \(status) \(body.code)" + (body.vaultCode.map { " (\($0))" } ?? "") + ": \(body.message)"
    )
  }

  private func unreachable(_ error: any Error) -> ApproverError {
    if let error = error as? ClientError {
      return ApproverError(.server, "\(server) could not be used: \(error.underlyingError)")
    }
    return ApproverError(.server, "\(server) could not be used: \(error)")
  }
}

/// Adds `Authorization: Bearer KEY` to every call: how a customer system (the `--auto` bot's
/// listing, the API benchmark) presents its API key to the custody server.
public struct BearerKey: ClientMiddleware {
  public let key: String

  public init(key: String) { self.key = key }

  public func intercept(
    _ request: HTTPRequest, body: HTTPBody?, baseURL: URL, operationID: String,
    next: @Sendable (HTTPRequest, HTTPBody?, URL) async throws -> (HTTPResponse, HTTPBody?)
  ) async throws -> (HTTPResponse, HTTPBody?) {
    var request = request
    request.headerFields[.authorization] = "Bearer \(key)"
    return try await next(request, body, baseURL)
  }
}
