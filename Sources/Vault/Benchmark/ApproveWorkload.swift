import Custody
import Foundation

/// The requests of `custos bench approve`, the same code whichever vault answers them:
/// `CustodyVault` in this process, or a device behind its socket through VaultWire's
/// `RemoteVault` (one per connection). It plays the server and the approvers: it creates
/// wallets with three ES256 passkeys each (concurrently, each naming its wallet id: the vault
/// applies the adds in id order), then in each round has every wallet sign one EIP-1559 transfer
/// approved by two of its passkeys, from `concurrency` tasks spread over the targets, retrying
/// with a fresh proof when the vault answers `staleProof`. A `VaultTreeMirror` (the server's
/// tree) takes every result in the vault's order and checks each root the vault reports.
///
/// Approvals are made outside the timed part of a round (on approvers' devices, not on the
/// HSM's machine); the mirror runs inside it. Batch sizes are read from the results
/// themselves: every change carries the epoch of the token write that made it durable.
public final class ApproveWorkload<Target: VaultRequestAPI>: @unchecked Sendable {
  /// Where the requests go; request task t uses `targets[t % targets.count]`.
  public let targets: [Target]
  public let concurrency: Int
  /// Whether wallets keep their own approvers and data for signing rounds; without, every
  /// wallet is approved by one set of passkeys and the mirror keeps only the tree (for a run
  /// that only creates wallets, up to millions).
  public let signing: Bool
  let server: ApproveBenchmark.Server
  // Written by `createWallets` only, before any round reads them.
  private(set) var clients: [ApproveBenchmark.Client] = []
  private let shared: ApproveBenchmark.Client

  /// A workload over `targets` with `concurrency` requests in flight while signing.
  public init(targets: [Target], concurrency: Int, signing: Bool = true) throws {
    precondition(!targets.isEmpty && concurrency >= 1)
    self.targets = targets
    self.concurrency = concurrency
    self.signing = signing
    server = try ApproveBenchmark.Server(keepingWallets: signing)
    shared = try ApproveBenchmark.Client()
  }

  // MARK: Creation

  /// Creates `count` wallets from `concurrency` tasks. Each task takes the next wallet id and
  /// sends its creation with the proof of that id's leaf in the mirror's tree (see
  /// `CurrentLeafProof`: the vault applies the adds in id order, so concurrent creations join
  /// one token write); a task waits while the mirror's tree is too small to hold the leaf (the
  /// first ids), and sends again with a fresh proof when the vault answers `staleProof`. Calls
  /// `checkpoint` with the wallets made so far and the seconds since the start after every
  /// `checkpointEvery` wallets (the creations in flight finish first).
  public func createWallets(
    _ count: Int, checkpointEvery: Int = .max,
    checkpoint: (_ created: Int, _ seconds: Double) async throws -> Void = { _, _ in }
  ) async throws -> ApproveWorkloadReport.Creation {
    var latencies = [Duration]()
    latencies.reserveCapacity(min(count, 1_000_000))
    var retries = 0
    var epochs = Set<UInt64>()
    let start = ContinuousClock.now
    let first = server.withMirror { $0.tree.nextWalletID }
    var created = 0
    while created < count {
      let chunk = min(checkpointEvery, count - created)
      let outcome = try await createChunk(ids: first + UInt64(created)..<first + UInt64(created + chunk))
      latencies += outcome.latencies
      retries += outcome.retries
      epochs.formUnion(outcome.epochs)
      created += chunk
      try await checkpoint(created, seconds(ContinuousClock.now - start))
    }
    let elapsed = seconds(ContinuousClock.now - start)
    return ApproveWorkloadReport.Creation(
      wallets: count, seconds: elapsed, perSecond: Double(count) / elapsed,
      latency: ApproveWorkloadReport.Latency(latencies), tokenWrites: epochs.count, staleProofRetries: retries)
  }

  /// Creates the wallets `ids` (the mirror's next ones) from `concurrency` tasks.
  private func createChunk(
    ids: Range<UInt64>
  ) async throws -> (latencies: [Duration], retries: Int, epochs: Set<UInt64>) {
    let next = NSLock()
    nonisolated(unsafe) var cursor = ids.lowerBound
    let (server, signing, shared) = (self.server, self.signing, self.shared)
    typealias Made = (latencies: [Duration], retries: Int, clients: [ApproveBenchmark.Client], epochs: Set<UInt64>)
    let made = try await withThrowingTaskGroup(of: Made.self) { group in
      for task in 0..<min(concurrency, ids.count) {
        let target = targets[task % targets.count]
        group.addTask {
          var made: Made = ([], 0, [], [])
          while true {
            let id: UInt64 = next.withLock {
              defer { cursor += 1 }
              return cursor
            }
            guard id < ids.upperBound else { return made }
            let client = signing ? try ApproveBenchmark.Client() : shared
            let (envelope, approvals) = try ApproveWorkload.creationRequest(client)
            let sent = ContinuousClock.now
            while true {
              // The leaf of `id` exists once the tree has more than id / 2 leaves.
              guard let proof = try server.withMirror({ try $0.leafProof(forNewWallet: id) }) else {
                try await Task.sleep(for: .microseconds(50))
                continue
              }
              do {
                let result = try await target.createWallet(envelope: envelope, approvals: approvals, proof: proof)
                try server.withMirror { _ = try $0.receive(result) }
                guard result.change.walletID == id else {
                  throw MerkleError(
                    .walletIDMismatch, "wallet id \(id) was asked for, the vault created \(result.change.walletID)")
                }
                made.epochs.insert(result.change.root.epoch)
                if signing {
                  client.walletID = id
                  made.clients.append(client)
                }
                break
              } catch let error as RequestError where error.code == .staleProof {
                made.retries += 1  // an earlier id did not come in time: the mirror has moved on since
                await Task.yield()
              }
            }
            made.latencies.append(ContinuousClock.now - sent)
          }
        }
      }
      return try await group.reduce(into: ([], 0, [], []) as Made) {
        $0.latencies += $1.latencies
        $0.retries += $1.retries
        $0.clients += $1.clients
        $0.epochs.formUnion($1.epochs)
      }
    }
    clients += made.clients.sorted { $0.walletID < $1.walletID }
    return (made.latencies, made.retries, made.epochs)
  }

  /// A `create-wallet` envelope for a 2-of-3 wallet of `client`'s passkeys, approved by all three.
  static func creationRequest(_ client: ApproveBenchmark.Client) throws -> ([UInt8], [[UInt8]]) {
    let approvers = client.passkeys.enumerated().map { $1.approver("approver-\($0)") }
    let configuration = WalletConfiguration(threshold: 2, approvers: approvers, policy: ApproveBenchmark.policy)
    let envelope = try RequestEnvelope(
      walletID: 0, walletHash: .zero, operation: .createWallet(configuration), nonce: 1,
      expiry: SystemVaultClock().now() + 600
    ).encoded()
    let approvals = try client.passkeys.enumerated().map { try $1.approve(envelope, as: "approver-\($0)").encoded() }
    return (envelope, approvals)
  }

  // MARK: Signing

  /// One round: every wallet signs one transfer approved by two of its passkeys (`round`
  /// chooses which two). This process's CPU time, and the device's when it is another process
  /// (`deviceCPUSeconds`), are read before and after the timed part.
  public func signRound(
    _ round: Int, deviceCPUSeconds: (() -> Double)? = nil
  ) async throws -> ApproveWorkloadReport.Round {
    precondition(signing, "a creation-only workload does not sign")
    let prepared = try clients.enumerated().map { index, client in
      try ApproveWorkload.prepare(client, server: server, pair: (index + round) % 3)
    }
    let start = ContinuousClock.now
    let cpuStart = processCPUSeconds()
    let deviceStart = deviceCPUSeconds?()
    let outcomes = try await signAll(prepared)
    let wall = seconds(ContinuousClock.now - start)
    let cpu = processCPUSeconds() - cpuStart
    let deviceBusy = deviceStart.map { (deviceCPUSeconds!() - $0) / wall }
    var perEpoch = [UInt64: Int]()
    for outcome in outcomes { perEpoch[outcome.epoch, default: 0] += 1 }
    var batches = CommitStatistics()
    for size in perEpoch.values { batches.record(batchSize: size, duration: .zero) }
    return ApproveWorkloadReport.Round(
      signatures: prepared.count, seconds: wall, perSecond: Double(prepared.count) / wall, coresBusy: cpu / wall,
      deviceCoresBusy: deviceBusy, staleProofRetries: outcomes.reduce(0) { $0 + $1.retries },
      latency: ApproveWorkloadReport.Latency(outcomes.map(\.latency)),
      batches: ApproveWorkloadReport.Batches(batches))
  }

  /// A transfer from `client`'s wallet approved by two of its three passkeys (`pair` chooses).
  static func prepare(
    _ client: ApproveBenchmark.Client, server: ApproveBenchmark.Server, pair: Int
  ) throws -> ApproveBenchmark.Prepared {
    let encoding = server.withMirror { $0.wallets[client.walletID]!.walletData }
    let wallet = try WalletData.decode(encoding)
    let transaction = EIP1559Transaction(
      chainID: 1, nonce: wallet.requestNonce, maxPriorityFeePerGas: Amount(1_500_000_000),
      maxFeePerGas: Amount(40_000_000_000), gasLimit: 21_000, to: ApproveBenchmark.destination,
      value: Amount(1_000_000_000_000))
    let envelope = try RequestEnvelope(
      walletID: wallet.id, walletHash: Hash256.sha256(encoding), operation: .signEIP1559(transaction),
      nonce: wallet.requestNonce + 1, expiry: SystemVaultClock().now() + 600, chain: .ethereum(chainID: 1)
    ).encoded()
    let chosen = [(0, 1), (1, 2), (0, 2)][pair % 3]
    let approvals = try [chosen.0, chosen.1].map {
      try client.passkeys[$0].approve(envelope, as: "approver-\($0)").encoded()
    }
    return ApproveBenchmark.Prepared(walletID: wallet.id, envelope: envelope, approvals: approvals)
  }

  /// What one signature took: from its first attempt to its result in the mirror.
  struct Outcome: Sendable {
    let latency: Duration
    let epoch: UInt64
    let retries: Int
  }

  /// Sends every prepared request from `concurrency` tasks; task t sends through target
  /// `t % targets.count`. A `staleProof` (the mirror is behind the vault) is retried with a
  /// fresh proof.
  func signAll(_ prepared: [ApproveBenchmark.Prepared]) async throws -> [Outcome] {
    let next = NSLock()
    nonisolated(unsafe) var cursor = 0
    let server = self.server
    return try await withThrowingTaskGroup(of: [Outcome].self) { group in
      for task in 0..<concurrency {
        let target = targets[task % targets.count]
        group.addTask {
          var outcomes = [Outcome]()
          while true {
            let index: Int = next.withLock {
              defer { cursor += 1 }
              return cursor
            }
            guard index < prepared.count else { return outcomes }
            let request = prepared[index]
            let sent = ContinuousClock.now
            var retries = 0
            while true {
              let (walletData, sealedSeed, proof) = try server.withMirror { mirror in
                let entry = mirror.wallets[request.walletID]!
                return (entry.walletData, entry.sealedSeed, try mirror.proof(ofWallet: request.walletID))
              }
              do {
                let result = try await target.sign(
                  envelope: request.envelope, approvals: request.approvals, walletData: walletData,
                  sealedSeed: sealedSeed, proof: proof)
                try server.withMirror { _ = try $0.receive(result) }
                outcomes.append(
                  Outcome(latency: ContinuousClock.now - sent, epoch: result.change.root.epoch, retries: retries))
                break
              } catch let error as RequestError where error.code == .staleProof {
                retries += 1
                await Task.yield()  // the mirror is behind the vault: fetch a newer proof
              }
            }
          }
        }
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
  }

  // MARK: The root

  /// Whether every target's durable root is the mirror's tree (leaf count and root).
  public func durableRootMatches() async throws -> Bool {
    let mirrored = try server.withMirror { try $0.anchor() }
    for target in targets where RootAnchor(try await target.durableRoot()) != mirrored {
      return false
    }
    return true
  }

  /// The mirror's tree: leaf count and root.
  public func mirroredAnchor() throws -> RootAnchor {
    try server.withMirror { try $0.anchor() }
  }
}

/// What one target of `custos bench approve` measured: the same fields in-process and over
/// the socket, so the two can be set side by side (and printed or encoded as JSON alike).
public struct ApproveWorkloadReport: Codable, Sendable, Hashable {
  /// Latency percentiles, in milliseconds.
  public struct Latency: Codable, Sendable, Hashable {
    public var p50: Double
    public var p90: Double
    public var p95: Double
    public var p99: Double
    public var max: Double

    public init(_ samples: [Duration]) {
      let sorted = samples.map { seconds($0) * 1000 }.sorted()
      func at(_ fraction: Double) -> Double {
        sorted.isEmpty ? 0 : sorted[Swift.min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.down)))]
      }
      p50 = at(0.50)
      p90 = at(0.90)
      p95 = at(0.95)
      p99 = at(0.99)
      max = sorted.last ?? 0
    }
  }

  /// Token writes seen by their epochs: how many changes each made durable.
  public struct Batches: Codable, Sendable, Hashable {
    public var commits: Int
    public var changes: Int
    public var smallest: Int
    public var mean: Double
    public var largest: Int
    /// Commits per batch size bucket (`CommitStatistics.bucketLabels`).
    public var histogram: [Int]

    public init(_ statistics: CommitStatistics) {
      commits = statistics.commits
      changes = statistics.changes
      smallest = statistics.commits == 0 ? 0 : statistics.smallestBatch
      mean = statistics.meanBatch
      largest = statistics.largestBatch
      histogram = statistics.histogram
    }
  }

  /// The wallets' creation.
  public struct Creation: Codable, Sendable, Hashable {
    public var wallets: Int
    public var seconds: Double
    public var perSecond: Double
    /// From a creation's first attempt to its result in the mirror.
    public var latency: Latency
    /// Token writes that made the creations durable (the distinct epochs their results carry).
    public var tokenWrites: Int
    /// Creations sent again with a fresh proof after `staleProof`.
    public var staleProofRetries: Int

    public init(
      wallets: Int, seconds: Double, perSecond: Double, latency: Latency, tokenWrites: Int = 0,
      staleProofRetries: Int = 0
    ) {
      self.wallets = wallets
      self.seconds = seconds
      self.perSecond = perSecond
      self.latency = latency
      self.tokenWrites = tokenWrites
      self.staleProofRetries = staleProofRetries
    }
  }

  /// One round of signatures.
  public struct Round: Codable, Sendable, Hashable {
    public var signatures: Int
    public var seconds: Double
    public var perSecond: Double
    /// This process's CPU time over wall time (2.0 = two cores all the time).
    public var coresBusy: Double
    /// The device process's, when the vault runs in another process.
    public var deviceCoresBusy: Double?
    /// Requests sent again with a fresh proof after `staleProof`.
    public var staleProofRetries: Int
    /// From a request's first attempt to its result in the mirror.
    public var latency: Latency
    public var batches: Batches
  }

  /// `in-process` or `socket`.
  public var target: String
  /// Connections (targets) the requests were spread over.
  public var connections: Int
  public var concurrency: Int
  public var creation: Creation
  public var rounds: [Round]
  /// The durable root the vault reports equals the mirror's tree after the last round.
  public var durableRootMatches: Bool

  public init(
    target: String, connections: Int, concurrency: Int, creation: Creation, rounds: [Round], durableRootMatches: Bool
  ) {
    self.target = target
    self.connections = connections
    self.concurrency = concurrency
    self.creation = creation
    self.rounds = rounds
    self.durableRootMatches = durableRootMatches
  }

  /// The best round's signatures per second.
  public var best: Double { rounds.map(\.perSecond).max() ?? 0 }
}

extension ApproveWorkload {
  /// The whole workload, reported: creates `wallets` wallets, runs `afterCreation` (the socket
  /// run reads the device's memory there), then `rounds` rounds of signatures, running
  /// `afterRound` after each (another workload measured in turns with this one runs its round
  /// there, so both meet the same machine).
  public func run(
    target name: String, wallets: Int, rounds: Int, deviceCPUSeconds: (() -> Double)? = nil,
    afterCreation: () async throws -> Void = {}, afterRound: (Int) async throws -> Void = { _ in }
  ) async throws -> ApproveWorkloadReport {
    let creation = try await createWallets(wallets)
    try await afterCreation()
    var measured = [ApproveWorkloadReport.Round]()
    for round in 0..<rounds {
      measured.append(try await signRound(round, deviceCPUSeconds: deviceCPUSeconds))
      try await afterRound(round)
    }
    return try await report(target: name, creation: creation, rounds: measured)
  }

  /// The report of a creation and its rounds, with whether the durable root now equals the
  /// mirror's tree (read from the targets at this point).
  public func report(
    target name: String, creation: ApproveWorkloadReport.Creation, rounds: [ApproveWorkloadReport.Round]
  ) async throws -> ApproveWorkloadReport {
    ApproveWorkloadReport(
      target: name, connections: targets.count, concurrency: concurrency, creation: creation, rounds: rounds,
      durableRootMatches: try await durableRootMatches())
  }
}
