import ArgumentParser
import DeviceServer
import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// `custos-hsm`: one emulated HSM device as a process.
@main
struct CustosHSM: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "custos-hsm",
    abstract: "Serve one emulated HSM device: sealed at start, unsealed by a quorum, the vault API over gRPC.",
    discussion: """
      Takes the device's lock (another process holding it is refused), starts SEALED and listens \
      on a Unix socket created 0600 (or on TCP with TLS). Unseal key holders unseal it with \
      `custos operator unseal`; a custody server then logs in with the Crypto User credential \
      and calls the vault API. SIGTERM or SIGINT: new calls are refused, calls in flight finish, \
      the vault and the sessions are closed, the socket is removed and the lock released.

      Prints on standard output, the second line once it listens:
        custos-hsm: device NAME (serial SERIAL) SEALED
        custos-hsm: listening on unix:PATH
      Logs go to standard error (CUSTOS_LOG_LEVEL or --verbose; default notice).
      """)

  @Option(help: "The device directory.")
  var device: String

  @Option(help: "The Unix socket to listen on (created 0600).")
  var socket: String?

  @Option(help: "Listen on TCP IP:PORT with TLS instead of a socket (an IPv4 or IPv6 address; port 0: any free port).")
  var listen: String?

  @Option(name: .customLong("tls-cert"), help: "With --listen: the PEM certificate chain.")
  var tlsCertificate: String?

  @Option(name: .customLong("tls-key"), help: "With --listen: the PEM private key.")
  var tlsKey: String?

  @Option(name: .customLong("session-idle-timeout"), help: "Seconds a Crypto User session lives without a call.")
  var sessionIdleTimeout = 900

  @Option(name: .customLong("max-sessions"), help: "Crypto User sessions open at once, at most.")
  var maxSessions = 64

  @Option(
    name: .customLong("renew-sessions-after"),
    help: "Token operations between two renewals of the vault's PKCS #11 request sessions (bounds SoftHSM's memory).")
  var renewSessionsAfter = PartitionVaultBackend.defaultRenewal

  @Flag(help: "Log debug detail to standard error.")
  var verbose = false

  func validate() throws {
    switch (socket, listen) {
    case (nil, nil): throw ValidationError("give --socket PATH, or --listen HOST:PORT with --tls-cert and --tls-key")
    case (.some, .some): throw ValidationError("give either --socket or --listen, not both")
    case (nil, .some):
      if tlsCertificate == nil || tlsKey == nil {
        throw ValidationError("--listen serves TLS only: give --tls-cert and --tls-key")
      }
    case (.some, nil):
      if tlsCertificate != nil || tlsKey != nil { throw ValidationError("--tls-cert and --tls-key go with --listen") }
    }
    if sessionIdleTimeout < 1 { throw ValidationError("--session-idle-timeout is at least 1 second") }
    if maxSessions < 1 { throw ValidationError("--max-sessions is at least 1") }
    if renewSessionsAfter < 1 { throw ValidationError("--renew-sessions-after is at least 1") }
  }

  func run() async throws {
    // At most two malloc arenas: glibc makes one per thread that meets contention (up to 8 per
    // core), and each keeps its free pages, so a long run of requests on the thread pool kept
    // tens of MiB resident in half-empty arenas; the device is meant to hold a root, not that.
    // (mallopt is in <malloc.h>, which the Glibc module does not export: found with dlsym;
    // M_ARENA_MAX is -8.)
    #if canImport(Glibc)
    if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") {
      typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
      _ = unsafeBitCast(symbol, to: Mallopt.self)(-8, 2)
    }
    #endif
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "custos.hsm")
    if verbose {
      logger.logLevel = .debug
    } else if let level = ProcessInfo.processInfo.environment["CUSTOS_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    {
      logger.logLevel = level
    } else {
      logger.logLevel = .notice
    }

    let listener: DeviceServerConfiguration.Listener
    if let socket {
      listener = .unixSocket(path: URL(fileURLWithPath: socket).standardizedFileURL.path)
    } else {
      let text = listen!
      guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else {
        throw ValidationError("--listen takes HOST:PORT, not \(text)")
      }
      let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
      listener = .tls(host: host, port: port, certificateChain: tlsCertificate!, privateKey: tlsKey!)
    }
    let configuration = DeviceServerConfiguration(
      device: device, listener: listener, sessionIdleTimeout: .seconds(sessionIdleTimeout), maxSessions: maxSessions,
      renewSessionsAfter: renewSessionsAfter)

    let server = try DeviceServer(
      configuration: configuration, logger: logger,
      announce: { address in say("custos-hsm: listening on \(address)") })
    let manifest = server.core.device.manifest
    say("custos-hsm: device \(manifest.name) (serial \(manifest.serial)) SEALED")
    logger.notice(
      "device opened and locked: SEALED",
      metadata: ["hsm.device": "\(manifest.serial)", "hsm.name": "\(manifest.name)"])
    var group = ServiceGroupConfiguration(
      services: [
        .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "custos-hsm")
      ],
      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    // Calls in flight get this long to finish after SIGTERM; then they are cancelled.
    group.maximumGracefulShutdownDuration = .seconds(30)
    try await ServiceGroup(configuration: group).run()
  }
}

/// A line on standard output, written at once (a pipe would otherwise buffer it).
private func say(_ line: String) {
  FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
