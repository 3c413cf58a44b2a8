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
/// out as one buffer, written with its head.
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
      let (response, body) = try await handler(
        request.head, HTTPBody(received.readableBytesView), ServerRequestMetadata(pathParameters: parameters))
      var sent = ByteBuffer()
      if let body {
        for try await chunk in body { sent.writeBytes(chunk) }
      }
      return Response(status: response.status, headers: response.headerFields, body: ResponseBody(byteBuffer: sent))
    }
  }
}
