import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OpenAPIRuntime

/// openapi.yaml's operations on the Hummingbird router, with whole bodies: this API's bodies are
/// small JSON documents, read and written in one piece.
///
/// swift-openapi-hummingbird's transport streams both ways: the request body as an async
/// sequence of copied chunks, the response through a writer closure fed by another. Per request
/// that cost more server CPU than several of the API's handlers; here the request body is
/// collected once (at most `maxBodySize` bytes, else 413 `bodyTooLarge`) and the response goes
/// out as one buffer, written with its head. An Accept header that allows no JSON answer is
/// refused (400 `notAcceptable`) before the operation runs.
struct RouterTransport<Context: RequestContext>: ServerTransport {
  let router: Router<Context>
  let maxBodySize: Int

  func register(
    _ handler:
      @escaping @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (
        HTTPResponse, HTTPBody?
      ),
    method: HTTPRequest.Method, path: String
  ) throws {
    let limit = maxBodySize
    router.on(RouterPath(path), method: method) { request, context in
      let received: ByteBuffer
      do {
        received = try await request.body.collect(upTo: limit)
      } catch is NIOTooManyBytesError {
        throw HTTPError(.contentTooLarge, message: "the body exceeds \(limit) bytes")
      }
      var parameters = [String: Substring]()
      for (name, value) in context.parameters where parameters[String(name)] == nil {
        parameters[String(name)] = value
      }
      var head = request.head
      if let accept = head.headerFields[.accept] {
        // Checked before the operation runs (the generated code checks it when it writes the
        // answer, after a POST has changed the database), and then left out: every operation
        // of openapi.yaml answers application/json only, and the generated check parses media
        // types at every request.
        guard Self.acceptsJSON(accept) else {
          return RouteErrorMiddleware<Context>.response(
            APIError(.notAcceptable, "this API answers application/json only: send Accept: application/json, or none"))
        }
        head.headerFields[.accept] = nil
      }
      let (response, body) = try await handler(
        head, HTTPBody(received.readableBytesView), ServerRequestMetadata(pathParameters: parameters))
      var sent = ByteBuffer()
      if let body {
        for try await chunk in body { sent.writeBytes(chunk) }
      }
      return Response(status: response.status, headers: response.headerFields, body: ResponseBody(byteBuffer: sent))
    }
  }

  /// Whether an Accept header allows an `application/json` answer: one of its media ranges is
  /// `application/json`, `application/*` or `*/*` (parameters aside, as the generated code
  /// reads them).
  static func acceptsJSON(_ accept: String) -> Bool {
    // What clients send nearly always (the generated client's header, curl's), without parsing.
    if accept == "application/json" || accept == "*/*" { return true }
    return accept.split(separator: ",").contains { range in
      let type = range.split(separator: ";", maxSplits: 1).first.map {
        $0.trimmingCharacters(in: .whitespaces).lowercased()
      }
      return type == "application/json" || type == "application/*" || type == "*/*"
    }
  }
}
