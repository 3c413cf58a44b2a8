import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOPosix
import OpenAPIRuntime
import Synchronization

/// The load generator's HTTP client for `custos bench api`: HTTP/1.1 over kept-alive
/// connections to one server, one request at a time per connection, a new connection when all
/// are busy. Whole bodies both ways (the API's bodies are small JSON documents).
///
/// The clients share the server's two cores, so what they spend per request is taken from the
/// server: AsyncHTTPClient's pool and streaming bodies cost the clients more CPU per request
/// than the server spends answering some of them. This is the least a client does: one write of
/// head and body, one read of the answer.
final class KeepAliveTransport: ClientTransport, Sendable {
  private let host: String
  private let port: Int
  private let timeout: TimeAmount
  private let group: any EventLoopGroup
  private let idle = Mutex<[Connection]>([])

  /// A transport to `url`'s host and port (http only); a request not answered within `timeout`
  /// fails and closes its connection.
  init(url: URL, timeout: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
    guard url.scheme == "http", let host = url.host else {
      throw CommandFailure("the load generator speaks plain HTTP; '\(url)' is not an http:// URL")
    }
    self.host = host
    self.port = url.port ?? 80
    self.timeout = TimeAmount(timeout)
    self.group = group
  }

  /// Closes the idle connections.
  func shutdown() {
    let connections = idle.withLock { idle in
      defer { idle.removeAll() }
      return idle
    }
    for connection in connections { connection.channel.close(promise: nil) }
  }

  func send(
    _ request: HTTPRequest, body: HTTPBody?, baseURL: URL, operationID: String
  ) async throws -> (HTTPResponse, HTTPBody?) {
    var bytes: ByteBuffer? = nil
    if let body {
      var buffer = ByteBuffer()
      for try await chunk in body { buffer.writeBytes(chunk) }
      bytes = buffer
    }
    var head = HTTPRequestHead(
      version: .http1_1, method: HTTPMethod(rawValue: request.method.rawValue),
      uri: baseURL.path + (request.path ?? "/"))
    head.headers.reserveCapacity(request.headerFields.count + 3)
    head.headers.add(name: "Host", value: "\(host):\(port)")
    for field in request.headerFields { head.headers.add(name: field.name.rawName, value: field.value) }
    if let bytes, request.headerFields[.contentLength] == nil {
      head.headers.add(name: "Content-Length", value: "\(bytes.readableBytes)")
    }

    let connection = try await takeConnection()
    let answer: Answer
    do {
      answer = try await connection.exchange(head, bytes, timeout: timeout)
    } catch {
      connection.channel.close(promise: nil)
      throw error
    }
    if answer.keepAlive && connection.channel.isActive {
      idle.withLock { $0.append(connection) }
    } else {
      connection.channel.close(promise: nil)
    }
    var response = HTTPResponse(status: .init(code: Int(answer.head.status.code)))
    for header in answer.head.headers {
      if let name = HTTPField.Name(header.name) {
        response.headerFields.append(HTTPField(name: name, value: header.value))
      }
    }
    return (response, HTTPBody(answer.body.readableBytesView))
  }

  private func takeConnection() async throws -> Connection {
    while let connection = idle.withLock({ $0.popLast() }) {
      if connection.channel.isActive { return connection }  // else the server closed it while idle
    }
    let handler = ResponseCollector()
    let channel = try await ClientBootstrap(group: group)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
          try channel.pipeline.syncOperations.addHandler(handler)
        }
      }
      .connect(host: host, port: port).get()
    return Connection(channel: channel, collector: handler)
  }

  /// One answer, whole.
  struct Answer: Sendable {
    let head: HTTPResponseHead
    let body: ByteBuffer
    let keepAlive: Bool
  }

  final class Connection: Sendable {
    let channel: any Channel
    let collector: ResponseCollector

    init(channel: any Channel, collector: ResponseCollector) {
      self.channel = channel
      self.collector = collector
    }

    /// Writes the request and waits for its answer.
    func exchange(_ head: HTTPRequestHead, _ body: ByteBuffer?, timeout: TimeAmount) async throws -> Answer {
      let loop = channel.eventLoop
      let promise = loop.makePromise(of: Answer.self)
      let channel = self.channel
      let collector = self.collector
      loop.execute {
        guard channel.isActive else {  // closed by the server since it was taken
          promise.fail(CommandFailure("the server closed the connection"))
          return
        }
        collector.expect(promise, timeout: timeout, on: loop, channel: channel)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
      }
      return try await promise.futureResult.get()
    }
  }

  /// Collects the answer to the request in flight on its connection; used on the connection's
  /// event loop only.
  final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private var promise: EventLoopPromise<Answer>?
    private var timer: Scheduled<Void>?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    func expect(_ promise: EventLoopPromise<Answer>, timeout: TimeAmount, on loop: any EventLoop, channel: any Channel)
    {
      self.promise = promise
      head = nil
      body = ByteBuffer()
      timer = loop.scheduleTask(in: timeout) { [weak self] in
        self?.fail(CommandFailure("no answer within the timeout"))
        channel.close(promise: nil)
      }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let received):
        head = received
      case .body(var part):
        body.writeBuffer(&part)
      case .end:
        guard let head, let promise else { return }
        timer?.cancel()
        self.promise = nil
        promise.succeed(Answer(head: head, body: body, keepAlive: head.isKeepAlive))
      }
    }

    func channelInactive(context: ChannelHandlerContext) {
      fail(CommandFailure("the server closed the connection"))
      context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
      fail(error)
      context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
      timer?.cancel()
      guard let promise else { return }
      self.promise = nil
      promise.fail(error)
    }
  }
}
