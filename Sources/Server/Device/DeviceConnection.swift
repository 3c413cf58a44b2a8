import Custody
import Foundation
import Logging
import Synchronization
import VaultWire

/// The server's way to the device: one `VaultClient` on the device's socket and one Crypto User
/// session, opened with the credential file the operator configured. Only the vault API is
/// reachable through it.
///
/// The client is made again after the connection breaks; the session is opened again when the
/// device answers `sessionRequired` (it restarted, or the session idled out), and the call is
/// then tried once more: a call refused for want of a session never reached the vault. Every
/// new session is reported to `onNewSession` (the ledger then forgets the vault's sequence
/// numbers, which restart with each device process).
public final class DeviceConnection: Sendable {
  public let endpoint: DeviceEndpoint
  private let credentialPath: String
  private let timeout: Duration
  private let logger: Logger
  private let state = Mutex<(client: VaultClient?, session: VaultSession?)>((nil, nil))
  private let newSessionHandler = Mutex<(@Sendable () async -> Void)?>(nil)

  /// A connection to `endpoint` logging in with the Crypto User credential in the file at
  /// `credentialPath` (read at each login, never kept beyond it).
  public init(endpoint: DeviceEndpoint, credentialPath: String, timeout: Duration = .seconds(30), logger: Logger) {
    self.endpoint = endpoint
    self.credentialPath = credentialPath
    self.timeout = timeout
    self.logger = logger
  }

  /// Called after each login (a new session), before the call that needed it goes on.
  public func onNewSession(_ handler: @escaping @Sendable () async -> Void) {
    newSessionHandler.withLock { $0 = handler }
  }

  // MARK: Calls

  /// The device's state; needs no session.
  public func status() async throws(VaultWireError) -> DeviceStatus {
    let client = try self.client()
    do {
      return try await client.status()
    } catch {
      dropClientIfBroken(error)
      throw error
    }
  }

  /// The committed root state.
  public func rootState() async throws(VaultWireError) -> RootState {
    try await withSession { client, session throws(VaultWireError) in try await client.rootState(session) }
  }

  /// Creates a wallet under the envelope's approvals.
  public func createWallet(
    envelope: [UInt8], approvals: [[UInt8]], proof: CurrentLeafProof
  ) async throws(VaultWireError) -> RequestResult {
    let call = VaultCall(creating: envelope, approvals: approvals, proof: proof)
    return try Self.result(
      try await withSession { client, session throws(VaultWireError) in
        try await client.createWallet(call, session: session)
      })
  }

  /// Changes, removes or signs with a wallet: `operation` names the vault call.
  public func walletCall(
    _ operation: WalletCall, envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8],
    proof: WalletProof
  ) async throws(VaultWireError) -> RequestResult {
    let call = VaultCall(
      envelope: envelope, approvals: approvals, walletData: walletData, sealedSeed: sealedSeed,
      proof: ChangeProof(
        proof: MerkleProof(leaf: Hash256.sha256(walletData), siblings: proof.siblings),
        leafCount: proof.anchor.leafCount, root: proof.anchor.root))
    let outcome = try await withSession { client, session throws(VaultWireError) in
      switch operation {
      case .update: try await client.updateWallet(call, session: session)
      case .remove: try await client.removeWallet(call, session: session)
      case .sign: try await client.sign(call, session: session)
      }
    }
    return try Self.result(outcome)
  }

  /// The vault calls on an existing wallet.
  public enum WalletCall: String, Sendable {
    case update = "UpdateWallet"
    case remove = "RemoveWallet"
    case sign = "Sign"
  }

  /// The public key and address at `path` of a wallet.
  public func publicKey(
    walletData: [UInt8], sealedSeed: [UInt8], path: String, address: WalletAddressKind?
  ) async throws(VaultWireError) -> PublicKeyInfo {
    let query = PublicKeyQuery(walletData: walletData, sealedSeed: sealedSeed, path: path, address: address)
    return try await withSession { client, session throws(VaultWireError) in
      try await client.publicKey(query, session: session)
    }
  }

  /// The result of the request whose envelope hashes to `envelopeHash`, when the device
  /// applied it and still holds its result; nil when it holds none.
  public func recoverResult(envelopeHash: Hash256) async throws(VaultWireError) -> RequestResult? {
    let outcome = try await withSession { client, session throws(VaultWireError) in
      try await client.result(envelopeHash: envelopeHash, session: session)
    }
    return try outcome.map { (outcome) throws(VaultWireError) in try Self.result(outcome) }
  }

  /// Closes the session and the connection.
  public func close() async {
    let (client, session) = state.withLock { state in
      defer { state = (nil, nil) }
      return state
    }
    guard let client else { return }
    // Bounded: a shutdown never waits on a device that stopped answering.
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        if let session { try? await client.logout(session) }
        await client.close()
      }
      group.addTask { try? await Task.sleep(for: .seconds(5)) }
      await group.next()
      group.cancelAll()
    }
  }

  // MARK: Plumbing

  private func client() throws(VaultWireError) -> VaultClient {
    if let client = state.withLock({ $0.client }) { return client }
    let client = try VaultClient(endpoint: endpoint, timeout: timeout)
    return state.withLock { state in
      if let existing = state.client {
        Task { await client.close() }
        return existing
      }
      state.client = client
      return client
    }
  }

  /// Runs `body` with a session, logging in first when none is open, and once more after a
  /// `sessionRequired` refusal.
  private func withSession<T: Sendable>(
    _ body: (VaultClient, VaultSession) async throws(VaultWireError) -> T
  ) async throws(VaultWireError) -> T {
    var attempt = 0
    while true {
      attempt += 1
      let client = try self.client()
      let session = try await self.session(client)
      do {
        return try await body(client, session)
      } catch {
        if error.code == .sessionRequired && attempt == 1 {
          state.withLock { if $0.session?.token === session.token { $0.session = nil } }
          logger.info("the device asked for a new session", metadata: ["hsm.endpoint": "\(endpoint)"])
          continue
        }
        dropClientIfBroken(error)
        throw error
      }
    }
  }

  private func session(_ client: VaultClient) async throws(VaultWireError) -> VaultSession {
    if let session = state.withLock({ $0.session }) { return session }
    let credential = try VaultClient.readCredential(at: credentialPath)
    let session: VaultSession
    do {
      session = try await client.login(credential: credential)
    } catch {
      dropClientIfBroken(error)
      throw error
    }
    state.withLock { $0.session = session }
    logger.info("Crypto User session opened", metadata: ["hsm.endpoint": "\(endpoint)"])
    if let handler = newSessionHandler.withLock({ $0 }) { await handler() }
    return session
  }

  /// Forgets the client after a broken connection, so the next call connects again.
  private func dropClientIfBroken(_ error: VaultWireError) {
    guard error.code == .unreachable || error.code == .stopping else { return }
    let client = state.withLock { state in
      defer { state = (nil, nil) }
      return state.client
    }
    if let client { Task { await client.close() } }
  }

  /// A vault outcome as the request API's result.
  static func result(_ outcome: VaultOutcome) throws(VaultWireError) -> RequestResult {
    guard let change = outcome.change else {
      throw VaultWireError(.unexpected, "the device answered without the change it committed")
    }
    return RequestResult(
      output: outcome.result, walletData: outcome.walletData, sealedSeed: outcome.sealedSeed, change: change)
  }
}
