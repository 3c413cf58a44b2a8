import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One kept-alive HTTP/1.1 connection on a blocking socket: the load generator's client threads
/// in `custos bench api` each own one and send their requests on it one after the other.
///
/// The clients share the server's two cores, so what they spend per request is taken from the
/// server and the device. A request here is one `send` of head and body and, usually, one `recv`
/// of the whole answer on the calling thread: no event loop, no hop between threads, no stream
/// of body chunks (those cost the event-loop transport about 100 us of CPU per exchange).
final class BlockingHTTPConnection {
  /// What the server answered.
  struct Answer {
    let status: Int
    let body: [UInt8]

    /// The body as text, for error messages.
    var text: String { String(decoding: body.prefix(600), as: UTF8.self) }
  }

  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }

  let host: String
  let port: Int
  private let timeout: Duration
  private var descriptor: Int32 = -1
  /// Bytes read and not yet consumed.
  private var received: [UInt8] = []
  private var start = 0

  /// A connection to `url`'s host and port (http only), opened at the first request; a read or
  /// write that waits longer than `timeout` fails and closes it.
  init(url: URL, timeout: Duration) throws {
    guard url.scheme == "http", let host = url.host else {
      throw CommandFailure("the load generator speaks plain HTTP; '\(url)' is not an http:// URL")
    }
    self.host = host
    self.port = url.port ?? 80
    self.timeout = timeout
  }

  deinit { close() }

  func close() {
    if descriptor >= 0 { Glibc.close(descriptor) }
    descriptor = -1
    received.removeAll(keepingCapacity: true)
    start = 0
  }

  /// Sends one request and reads its answer. `headers` go as given; Host, Content-Length (with
  /// a body) and Content-Type (JSON, with a body) are added. Any failure closes the connection,
  /// so the next request opens a new one.
  func send(
    _ method: String, _ path: String, headers: [(String, String)] = [], json body: [UInt8]? = nil
  ) throws -> Answer {
    do {
      if descriptor < 0 { try open() }
      var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
      for (name, value) in headers { head += "\(name): \(value)\r\n" }
      if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
      head += "\r\n"
      var request = Array(head.utf8)
      if let body { request += body }
      try write(request)
      return try readAnswer()
    } catch {
      close()
      throw error
    }
  }

  // MARK: The socket

  private func open() throws {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>? = nil
    let resolved = getaddrinfo(host, String(port), &hints, &list)
    guard resolved == 0, let first = list else {
      throw Failure("cannot resolve \(host): \(String(cString: gai_strerror(resolved)))")
    }
    defer { freeaddrinfo(list) }
    var lastError = "no address"
    var candidate: UnsafeMutablePointer<addrinfo>? = first
    while let address = candidate {
      candidate = address.pointee.ai_next
      let socket = Glibc.socket(address.pointee.ai_family, address.pointee.ai_socktype, address.pointee.ai_protocol)
      guard socket >= 0 else {
        lastError = String(cString: strerror(errno))
        continue
      }
      if connect(socket, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 {
        var one: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let (seconds, attoseconds) = timeout.components
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        descriptor = socket
        return
      }
      lastError = String(cString: strerror(errno))
      Glibc.close(socket)
    }
    throw Failure("cannot connect to \(host):\(port): \(lastError)")
  }

  private func write(_ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
      let sent = bytes.withUnsafeBytes { buffer in
        Glibc.send(descriptor, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
      }
      if sent < 0 {
        if errno == EINTR { continue }
        throw Failure("writing to \(host):\(port) failed: \(String(cString: strerror(errno)))")
      }
      offset += sent
    }
  }

  /// Reads more bytes after those held (indices into them stay valid); false at the end of the
  /// stream.
  private func fill() throws -> Bool {
    let old = received.count
    received.append(contentsOf: repeatElement(0, count: 16_384))
    while true {
      let count = received.withUnsafeMutableBytes { buffer in
        recv(descriptor, buffer.baseAddress! + old, buffer.count - old, 0)
      }
      if count < 0 && errno == EINTR { continue }
      received.removeSubrange((old + max(count, 0))...)
      if count < 0 {
        let reason =
          errno == EAGAIN || errno == EWOULDBLOCK ? "no answer in \(timeout)" : String(cString: strerror(errno))
        throw Failure("reading from \(host):\(port) failed: \(reason)")
      }
      return count > 0
    }
  }

  /// The index just past the next CRLF at or after `from`, reading more as needed.
  private func lineEnd(from: Int) throws -> Int {
    var index = from
    while true {
      while index + 1 < received.count {
        if received[index] == 0x0D && received[index + 1] == 0x0A { return index + 2 }
        index += 1
      }
      guard try fill() else { throw Failure("\(host):\(port) closed the connection in the middle of an answer") }
    }
  }

  private func take(_ count: Int) throws -> [UInt8] {
    while received.count - start < count {
      guard try fill() else { throw Failure("\(host):\(port) closed the connection in the middle of an answer") }
    }
    defer { start += count }
    return Array(received[start..<(start + count)])
  }

  private func line() throws -> String {
    let end = try lineEnd(from: start)
    defer { start = end }
    return String(decoding: received[start..<(end - 2)], as: UTF8.self)
  }

  private func readAnswer() throws -> Answer {
    // Bytes of earlier answers are consumed: drop them before this one is read.
    received.removeSubrange(0..<start)
    start = 0
    let statusLine = try line()
    let parts = statusLine.split(separator: " ", maxSplits: 2)
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
      throw Failure("\(host):\(port) answered '\(statusLine.prefix(80))', not an HTTP/1.1 status line")
    }
    var length: Int? = nil
    var chunked = false
    var keepAlive = parts[0] == "HTTP/1.1"
    while true {
      let header = try line()
      if header.isEmpty { break }
      guard let colon = header.firstIndex(of: ":") else { continue }
      let name = header[..<colon].lowercased()
      let value = header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces).lowercased()
      switch name {
      case "content-length": length = Int(value)
      case "transfer-encoding": chunked = value.contains("chunked")
      case "connection": keepAlive = !value.contains("close")
      default: break
      }
    }
    var body = [UInt8]()
    if chunked {
      while true {
        let sizeLine = try line()
        guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else {
          throw Failure("\(host):\(port) sent a bad chunk size '\(sizeLine.prefix(20))'")
        }
        if size == 0 {
          while try !line().isEmpty {}
          break
        }
        body += try take(size)
        _ = try take(2)
      }
    } else if let length {
      body = try take(length)
    } else if status >= 200 && status != 204 && status != 304 {
      while try fill() {}
      body = Array(received[start...])
      start = received.count
      keepAlive = false
    }
    if !keepAlive { close() }
    return Answer(status: status, body: body)
  }
}
