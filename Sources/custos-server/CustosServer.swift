import ArgumentParser
import Custody
import Foundation
import Logging
import NIOCore
import NIOPosix
import Server
import VaultWire

/// `custos-server`: the custody server in front of one device.
@main
struct CustosServer: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "custos-server",
    abstract: "The custody server: the HTTP API of openapi.yaml in front of one custos-hsm device.",
    subcommands: [Serve.self, Keys.self])
}

/// Options every subcommand that opens the database shares.
struct DatabaseOptions: ParsableArguments {
  @Option(help: "The SQLite database (created with its directory when missing).")
  var database = ".custos/server/custos.sqlite"
}

/// Logging on standard error: CUSTOS_LOG_LEVEL or --verbose; default notice.
func makeLogger(verbose: Bool) -> Logger {
  LoggingSystem.bootstrap(StreamLogHandler.standardError)
  var logger = Logger(label: "custos.server")
  if verbose {
    logger.logLevel = .debug
  } else if let level = ProcessInfo.processInfo.environment["CUSTOS_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) {
    logger.logLevel = level
  } else {
    logger.logLevel = .notice
  }
  return logger
}

/// A line on standard output, written at once (a pipe would otherwise buffer it).
func say(_ line: String) {
  FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Serve the API.",
    discussion: """
      Connects to the device's socket with the Crypto User credential (only the vault API is \
      reachable through it), reconciles the database's tree with the device's root, and serves \
      HTTP. SIGTERM or SIGINT: stops taking connections, finishes the requests in flight, exits 0.

      Prints on standard output once it listens:
        custos-server: listening on http://HOST:PORT
      """)

  @OptionGroup var database: DatabaseOptions

  @Option(help: "Address to listen on.")
  var host = "127.0.0.1"

  @Option(help: "Port to listen on (0: any free port).")
  var port = 8080

  @Option(help: "The device's Unix socket.")
  var socket = ".custos/hsm.sock"

  @Option(name: .customLong("cu-credential"), help: "The Crypto User credential file.")
  var credential = ".custos/rehearsal/crypto-user.credential"

  @Option(name: .customLong("poll-ms"), help: "Milliseconds between reads of the device's status.")
  var pollMilliseconds = 500

  @Option(name: .customLong("max-body"), help: "Largest request body in bytes.")
  var maxBody = 65_536

  @Flag(help: "Log debug detail to standard error.")
  var verbose = false

  func validate() throws {
    guard (1...1_000_000).contains(port) || port == 0, port <= 65_535 else {
      throw ValidationError("--port is 0 to 65535")
    }
    guard pollMilliseconds >= 10 else { throw ValidationError("--poll-ms is at least 10") }
    guard maxBody >= 1024 else { throw ValidationError("--max-body is at least 1024") }
  }

  func run() async throws {
    // Tasks run on the HTTP server's event loops instead of Swift's global pool: a request's
    // handler then needs no hop between the two thread pools on its way in and out (measured
    // with wrk on this 2-core machine: 15-20% less server CPU per request on the simplest routes;
    // in whole `custos bench api` workflows 5-11% in one pair of runs and inside the machine's
    // noise in another). Nothing here blocks a thread but SQLite's short transactions.
    _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    let logger = makeLogger(verbose: verbose)
    let configuration = ServerConfiguration(
      host: host, port: port, databasePath: database.database,
      device: .unixSocket(path: URL(fileURLWithPath: socket).standardizedFileURL.path), credentialPath: credential,
      maxBodySize: maxBody, devicePollInterval: .milliseconds(pollMilliseconds))
    let host = self.host
    let app = try await buildApplication(configuration, logger: logger) { port in
      say("custos-server: listening on http://\(host):\(port)")
    }
    try await app.runService()
  }
}

struct Keys: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Make, list and revoke API keys.", subcommands: [Create.self, List.self, Revoke.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Make an API key and print it once.",
      discussion: """
        The key is printed on standard output and never again: the database keeps only its \
        SHA-256. Scopes: \(APIScope.allCases.map(\.rawValue).joined(separator: ", ")); `all` for every one.
        """)

    @OptionGroup var database: DatabaseOptions

    @Option(help: "A name for the key (who or what uses it).")
    var name: String

    @Option(parsing: .upToNextOption, help: "Scopes the key grants.")
    var scope: [String]

    func run() async throws {
      var scopes = Set<APIScope>()
      for text in scope {
        if text == "all" {
          scopes.formUnion(APIScope.allCases)
        } else if let scope = APIScope(rawValue: text) {
          scopes.insert(scope)
        } else {
          throw ValidationError(
            "unknown scope '\(text)'; scopes are \(APIScope.allCases.map(\.rawValue).joined(separator: ", ")) or all")
        }
      }
      guard !scopes.isEmpty else { throw ValidationError("give at least one --scope") }
      guard !name.isEmpty, name.utf8.count <= 128 else { throw ValidationError("--name is 1 to 128 bytes") }
      var logger = Logger(label: "custos.server.keys")
      logger.logLevel = .warning
      let repository = SQLiteRepository(database: try ServerDatabase(path: database.database, logger: logger))
      let (key, record) = APIKeys.make(name: name, scopes: scopes, at: Date())
      try await repository.insert(record)
      say(key)
      FileHandle.standardError.write(
        Data(
          "custos-server: key \(record.id) (\(name)) with \(record.scopes.sorted().map(\.rawValue).joined(separator: " ")); shown once, keep it now\n"
            .utf8))
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the keys (never the keys themselves).")

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
      var logger = Logger(label: "custos.server.keys")
      logger.logLevel = .warning
      let repository = SQLiteRepository(database: try ServerDatabase(path: database.database, logger: logger))
      for key in try await repository.keys() {
        say(
          "\(key.id)  \(key.revokedAt == nil ? "live   " : "revoked")  \(key.scopes.sorted().map(\.rawValue).joined(separator: ","))  \(key.name)"
        )
      }
    }
  }

  struct Revoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Revoke a key by its id (a running server forgets it at its next start).")

    @OptionGroup var database: DatabaseOptions

    @Argument(help: "The key's id (ak_...).")
    var id: String

    func run() async throws {
      var logger = Logger(label: "custos.server.keys")
      logger.logLevel = .warning
      let repository = SQLiteRepository(database: try ServerDatabase(path: database.database, logger: logger))
      guard try await repository.revoke(id: id, at: Date()) else {
        throw ValidationError("there is no live key \(id)")
      }
      say("revoked \(id)")
    }
  }
}
