import Foundation
import Glibc
import Testing

@testable import custos

/// The load generator's HTTP/1.1 connection against a real TCP listener that answers the way
/// servers and proxies do: split writes, kept-alive connections, chunked bodies, closes.
@Suite struct BlockingHTTPConnectionTests {
  /// A listener on 127.0.0.1 whose connections each answer their requests with the next of
  /// `answers` (raw bytes, written in the pieces given); after its answers a connection is
  /// closed. Records the requests' heads.
  final class ScriptedServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var requestLines: [String] = []
    private var connectionCount = 0

    init(connections: [[[String]]]) throws {
      let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
      var address = sockaddr_in()
      address.sin_family = sa_family_t(AF_INET)
      address.sin_addr.s_addr = inet_addr("127.0.0.1")
      address.sin_port = 0
      var length = socklen_t(MemoryLayout<sockaddr_in>.size)
      let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
      }
      try #require(bound == 0 && listen(listener, 8) == 0)
      withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listener, $0, &length) }
      }
      self.listener = listener
      port = Int(UInt16(bigEndian: address.sin_port))
      let thread = Thread { [self] in
        for answers in connections {
          let connection = accept(listener, nil, nil)
          guard connection >= 0 else { return }
          lock.withLock { connectionCount += 1 }
          for pieces in answers {
            guard let line = Self.readRequest(connection) else { break }
            lock.withLock { requestLines.append(line) }
            for piece in pieces {
              _ = Array(piece.utf8).withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
              usleep(2000)
            }
          }
          close(connection)
        }
      }
      thread.start()
    }

    deinit { close(listener) }

    var requests: [String] { lock.withLock { requestLines } }
    var connections: Int { lock.withLock { connectionCount } }

    /// Reads one request (head and Content-Length body); its head.
    static func readRequest(_ connection: Int32) -> String? {
      var bytes = [UInt8]()
      var byte: UInt8 = 0
      while !bytes.ends(with: [13, 10, 13, 10]) {
        guard recv(connection, &byte, 1, 0) == 1 else { return nil }
        bytes.append(byte)
      }
      let head = String(decoding: bytes, as: UTF8.self)
      let length =
        head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
        .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
      for _ in 0..<length { guard recv(connection, &byte, 1, 0) == 1 else { return nil } }
      return head
    }
  }

  func connection(_ server: ScriptedServer) throws -> BlockingHTTPConnection {
    try BlockingHTTPConnection(url: URL(string: "http://127.0.0.1:\(server.port)")!, timeout: .seconds(5))
  }

  @Test func readsAnswersSplitAcrossWritesOnOneKeptAliveConnection() throws {
    let server = try ScriptedServer(connections: [
      [
        ["HTTP/1.1 201 Created\r\nContent-Len", "gth: 10\r\nContent-Type: application/json\r\n\r\n{\"id\":", "\"a\"}"],
        ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"],
      ]
    ])
    let client = try connection(server)
    let first = try client.send("POST", "/v1/things", headers: [("Accept", "application/json")], json: Array("{}".utf8))
    #expect(first.status == 201)
    #expect(first.body == Array("{\"id\":\"a\"}".utf8))
    let second = try client.send("GET", "/v1/things/a")
    #expect(second.status == 200)
    #expect(second.body == Array("{}".utf8))
    let port = server.port
    #expect(
      server.requests == [
        "POST /v1/things HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: application/json\r\n"
          + "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
        "GET /v1/things/a HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n",
      ])
    #expect(server.connections == 1)
  }

  @Test func readsAChunkedBody() throws {
    let server = try ScriptedServer(connections: [
      [["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n", "5;x=y\r\n:\"b\"}\r\n0\r\n\r\n"]]
    ])
    let answer = try connection(server).send("GET", "/chunked")
    #expect(answer.status == 200)
    #expect(answer.text == "{\"a\":\"b\"}")
  }

  @Test func opensANewConnectionAfterTheServerSaysClose() throws {
    let server = try ScriptedServer(connections: [
      [["HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none"]],
      [["HTTP/1.0 200 OK\r\n\r\ntwo, to the end of the stream"]],
      [["HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]],
    ])
    let client = try connection(server)
    #expect(try client.send("GET", "/1").text == "one")
    #expect(try client.send("GET", "/2").text == "two, to the end of the stream")
    let third = try client.send("GET", "/3")
    #expect(third.status == 404 && third.body.isEmpty)
    #expect(server.connections == 3)
  }

  @Test func anAnswerCutShortIsAnErrorAndTheNextRequestReconnects() throws {
    let server = try ScriptedServer(connections: [
      [["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]],
      [["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]],
    ])
    let client = try connection(server)
    #expect {
      try client.send("GET", "/cut")
    } throws: { error in
      "\(error)".contains("closed the connection in the middle of an answer")
    }
    #expect(try client.send("GET", "/again").text == "ok")
    #expect(server.connections == 2)
  }

  @Test func refusesAnAnswerThatIsNotHTTP() throws {
    let server = try ScriptedServer(connections: [[["SSH-2.0-OpenSSH\r\n\r\n"]]])
    #expect {
      try connection(server).send("GET", "/")
    } throws: { error in
      "\(error)".contains("not an HTTP/1.1 status line")
    }
  }
}

extension Array where Element == UInt8 {
  fileprivate func ends(with suffix: [UInt8]) -> Bool {
    count >= suffix.count && self[(count - suffix.count)...].elementsEqual(suffix)
  }
}
