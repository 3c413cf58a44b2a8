import CustosAPI
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import VaultWire

/// Everything `custos-server serve` needs to know.
public struct ServerConfiguration: Sendable {
  /// Where HTTP listens; port 0 takes a free port (announced on standard output).
  public var host: String
  public var port: Int
  /// The SQLite file (created 0600 in a 0700 directory when missing).
  public var databasePath: String
  /// The device's socket (or TLS address).
  public var device: DeviceEndpoint
  /// The Crypto User credential file the init-device ceremony wrote.
  public var credentialPath: String
  /// Largest request body accepted, in bytes.
  public var maxBodySize: Int
  /// How often the device's status is read (and approved requests waiting for it are sent).
  public var devicePollInterval: Duration
  /// How often expired requests are closed.
  public var expirySweepInterval: Duration
  /// Deadline of one vault call.
  public var vaultCallTimeout: Duration

  public init(
    host: String = "127.0.0.1", port: Int = 8080, databasePath: String = ".custos/server/custos.sqlite",
    device: DeviceEndpoint = .unixSocket(path: ".custos/hsm.sock"),
    credentialPath: String = ".custos/rehearsal/crypto-user.credential", maxBodySize: Int = 65_536,
    devicePollInterval: Duration = .milliseconds(500), expirySweepInterval: Duration = .seconds(5),
    vaultCallTimeout: Duration = .seconds(30)
  ) {
    self.host = host
    self.port = port
    self.databasePath = databasePath
    self.device = device
    self.credentialPath = credentialPath
    self.maxBodySize = maxBodySize
    self.devicePollInterval = devicePollInterval
    self.expirySweepInterval = expirySweepInterval
    self.vaultCallTimeout = vaultCallTimeout
  }
}

/// The custody server, as Hummingbird's template builds an application: the database, the
/// device connection and the workflow, the API routes from openapi.yaml with their
/// middlewares, and the services that run beside the HTTP server (the device keeper, which
/// follows the device's state, reconciles and sends approved requests; the expiry sweeper).
/// `runService()` runs them in one `ServiceGroup` that shuts down gracefully on SIGTERM and
/// SIGINT: the HTTP server stops taking connections and finishes the requests in flight first.
///
/// `onListening` receives the port HTTP listens on once it does.
public func buildApplication(
  _ configuration: ServerConfiguration, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
) async throws -> some ApplicationProtocol {
  let database = try ServerDatabase(path: configuration.databasePath, logger: logger)
  let repository = SQLiteRepository(database: database)
  let device = DeviceConnection(
    endpoint: configuration.device, credentialPath: configuration.credentialPath,
    timeout: configuration.vaultCallTimeout, logger: logger)
  let custodian = Custodian(repository: repository, device: device, logger: logger)

  let router = Router()
  router.add(middleware: RouteErrorMiddleware())
  let handler = CustodyAPIHandler(custodian: custodian, logger: logger)
  try handler.registerHandlers(
    on: RouterTransport(router: router, maxBodySize: configuration.maxBodySize), configuration: .custos,
    middlewares: [
      ErrorMiddleware(maxBodySize: configuration.maxBodySize, logger: logger),
      APIKeyMiddleware(keys: APIKeyCache(repository: repository)),
    ])

  return Application(
    router: router,
    configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "custos-server"),
    services: [
      DeviceKeeper(custodian: custodian, interval: configuration.devicePollInterval, logger: logger),
      ExpirySweeper(repository: repository, interval: configuration.expirySweepInterval, logger: logger),
    ],
    onServerRunning: { channel in
      onListening(channel.localAddress?.port ?? configuration.port)
    },
    logger: logger)
}

/// Follows the device: reads its status every `interval`; when it is READY, reconciles the
/// tree with it whenever that is due (on start, after it came back or was unsealed, after a
/// call whose outcome is unknown) and sends the approved requests that waited for it.
struct DeviceKeeper: Service {
  let custodian: Custodian
  let interval: Duration
  let logger: Logger

  func run() async throws {
    try? await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        await tick()
        try await Task.sleep(for: interval)
      }
    }
    await custodian.device.close()
  }

  func tick() async {
    let ledger = custodian.ledger
    if await custodian.refreshDeviceStatus() {
      logger.info("the device is READY")
      await ledger.requireReconciliation()
    }
    guard custodian.deviceSnapshot.isReady else { return }
    if await ledger.needsReconciliation {
      do {
        try await ledger.reconcile()
      } catch {
        logger.warning("reconciliation postponed", metadata: ["error": "\(error)"])
        return
      }
    }
    if case .agreed = await ledger.agreement {
      await custodian.sendApproved()
    }
  }
}

/// Closes the requests whose expiry passed before they were sent.
struct ExpirySweeper: Service {
  let repository: any CustodyRepository
  let interval: Duration
  let logger: Logger

  func run() async throws {
    try? await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        do {
          let expired = try await repository.expire(now: Date())
          if expired > 0 { logger.info("requests expired", metadata: ["requests": "\(expired)"]) }
        } catch {
          logger.error("cannot expire requests", metadata: ["error": "\(error)"])
        }
        try await Task.sleep(for: interval)
      }
    }
  }
}
