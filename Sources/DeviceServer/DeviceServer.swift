import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HSMBridge
import Logging
import ServiceLifecycle
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// How `custos-hsm` serves one device.
public struct DeviceServerConfiguration: Sendable {
  /// Where the device listens.
  public enum Listener: Sendable, Hashable {
    /// A Unix domain socket, created 0600.
    case unixSocket(path: String)
    /// TCP with TLS (for a remote device): the certificate chain and private key are PEM files.
    /// Port 0 takes a free port (announced once bound).
    case tls(host: String, port: Int, certificateChain: String, privateKey: String)
  }

  /// The device directory.
  public var device: String
  public var listener: Listener
  /// How long a Crypto User session lives without a call.
  public var sessionIdleTimeout: Duration
  /// Sessions open at once, at most.
  public var maxSessions: Int

  public init(
    device: String, listener: Listener, sessionIdleTimeout: Duration = .seconds(900), maxSessions: Int = 64
  ) {
    self.device = device
    self.listener = listener
    self.sessionIdleTimeout = sessionIdleTimeout
    self.maxSessions = maxSessions
  }
}

/// The emulated HSM as a process: takes the device's lock, starts SEALED, serves the Vault and
/// Operator services over gRPC, and on a graceful shutdown (SIGTERM through `ServiceGroup`)
/// refuses new calls, lets the calls in flight finish, closes the vault and the sessions and
/// removes its socket. The lock goes with the process.
public final class DeviceServer: Service, Sendable {
  public let configuration: DeviceServerConfiguration
  public let core: DeviceCore
  private let logger: Logger
  private let announce: @Sendable (String) -> Void

  /// Opens (and locks) the device and checks that it can be served and that the socket path is
  /// free. Nothing listens yet: `run()` does that.
  ///
  /// - Parameter announce: called once with the address (`unix:PATH` or `tls:HOST:PORT`) when
  ///   the device listens.
  public init(
    configuration: DeviceServerConfiguration, logger: Logger,
    openBackend: @escaping VaultBackendFactory = PartitionVaultBackend.open,
    announce: @escaping @Sendable (String) -> Void = { _ in }
  ) throws {
    switch configuration.listener {
    case .unixSocket(let path): try Self.checkSocketPath(path)
    case .tls(_, let port, let chain, let key):
      guard (0...65535).contains(port) else {
        throw DeviceServerError(.listenerInvalid, "port \(port) is not a TCP port")
      }
      for file in [chain, key] where !FileManager.default.isReadableFile(atPath: file) {
        throw DeviceServerError(.listenerInvalid, "cannot read the TLS file \(file)")
      }
    }
    let device = try Device.open(at: configuration.device, logger: logger)
    self.configuration = configuration
    self.core = try DeviceCore(
      device: device, measurement: try Self.measureExecutable(), sessionIdleTimeout: configuration.sessionIdleTimeout,
      maxSessions: configuration.maxSessions, openBackend: openBackend, logger: logger)
    self.logger = logger
    self.announce = announce
  }

  /// Serves until a graceful shutdown, then drains and closes.
  public func run() async throws {
    let services: [any RegistrableRPCService] = [VaultService(core: core), OperatorService(core: core)]
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    var socketPath: String? = nil
    switch configuration.listener {
    case .unixSocket(let path):
      socketPath = path
      server = GRPCServer(
        transport: .http2NIOPosix(address: .unixDomainSocket(path: path), transportSecurity: .plaintext),
        services: services)
    case .tls(let host, let port, let chain, let key):
      server = GRPCServer(
        transport: .http2NIOPosix(
          address: host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port),
          transportSecurity: .tls(
            certificateChain: [.file(path: chain, format: .pem)], privateKey: .file(path: key, format: .pem))),
        services: services)
    }
    let core = self.core
    do {
      try await withGracefulShutdownHandler {
        try await withThrowingDiscardingTaskGroup { group in
          // The socket is created by bind(2) with the process's umask: make it 0600 from the
          // first instant, then put the umask back.
          let previousMask = socketPath == nil ? nil : umask(0o177)
          group.addTask { try await server.serve() }
          let address: SocketAddress
          do {
            address = try await server.transport.listeningAddress
            if let previousMask { umask(previousMask) }
          } catch {
            if let previousMask { umask(previousMask) }
            throw DeviceServerError(.listenerInvalid, "cannot listen on \(configuration.listener): \(error)")
          }
          if let socketPath { try Self.checkSocketPermissions(socketPath) }
          let announced = Self.describe(address)
          logger.notice(
            "serving: SEALED until a quorum unseals",
            metadata: ["hsm.device": "\(core.device.manifest.serial)", "hsm.listen": "\(announced)"])
          announce(announced)
        }
      } onGracefulShutdown: {
        // New vault calls are refused at once; the transport stops only when every call in
        // flight has its answer, so no committed change loses its reply in a closed stream.
        core.beginStopping()
        Task {
          await core.drain()
          server.beginGracefulShutdown()
        }
      }
    } catch {
      await core.finish()
      if let socketPath { unlink(socketPath) }
      throw error
    }
    await core.finish()
    if let socketPath { unlink(socketPath) }
    logger.notice("device server stopped", metadata: ["hsm.device": "\(core.device.manifest.serial)"])
  }

  // MARK: Socket

  /// Refuses a socket path that a live server answers on, or that is something else than a
  /// socket; a socket nobody answers on (left by a killed process) is replaced.
  static func checkSocketPath(_ path: String) throws {
    guard path.utf8.count < 108 else {
      throw DeviceServerError(
        .listenerInvalid, "the socket path \(path) is longer than a Unix socket allows (107 bytes)")
    }
    let parent = (path as NSString).deletingLastPathComponent
    guard FileManager.default.fileExists(atPath: parent.isEmpty ? "." : parent) else {
      throw DeviceServerError(.listenerInvalid, "the socket's directory \(parent) does not exist")
    }
    var status = stat()
    guard lstat(path, &status) == 0 else { return }
    guard status.st_mode & S_IFMT == S_IFSOCK else {
      throw DeviceServerError(.socketInUse, "\(path) exists and is not a socket; refusing to replace it")
    }
    if Self.answers(path) {
      throw DeviceServerError(.socketInUse, "another process is serving \(path)")
    }
  }

  /// Whether something accepts connections on the Unix socket at `path`.
  static func answers(_ path: String) -> Bool {
    let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
      for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
    }
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
      }
    }
  }

  /// Makes sure the socket is 0600 and owned by this process's user.
  static func checkSocketPermissions(_ path: String) throws {
    chmod(path, 0o600)
    var status = stat()
    guard lstat(path, &status) == 0, status.st_mode & 0o777 == 0o600, status.st_uid == getuid() else {
      throw DeviceServerError(.socketPermissions, "the socket \(path) is not 0600 and ours; refusing to serve on it")
    }
  }

  static func describe(_ address: SocketAddress) -> String {
    if let unix = address.unixDomainSocket { return "unix:\(unix.path)" }
    if let ipv4 = address.ipv4 { return "tls:\(ipv4.host):\(ipv4.port)" }
    if let ipv6 = address.ipv6 { return "tls:[\(ipv6.host)]:\(ipv6.port)" }
    return "\(address)"
  }

  // MARK: Measurement

  /// SHA-256 of the running executable: what the device reports as its vault measurement (the
  /// code-signing ceremony of DESIGN.md section 9 will sign and check this value).
  static func measureExecutable() throws -> [UInt8] {
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/exe") else {
      throw DeviceServerError(.deviceNotServable, "cannot read the running executable to measure it")
    }
    defer { try? handle.close() }
    var hash = SHA256()
    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hash.update(data: chunk) }
    return Array(hash.finalize())
  }
}
