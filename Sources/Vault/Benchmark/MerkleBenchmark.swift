import Custody
import Foundation
import HSMBridge
import Logging

/// `custos bench merkle`: the server tree's inserts and proofs, and the vault's verify+apply,
/// each next to the raw SHA-256 work it needs, measured in the same run.
///
/// The raw baseline replays exactly the SHA-256 calls the measured code must make (the same
/// count, on inputs of the same sizes) through the same SHA-256 implementation, so a ratio of
/// 1.0 would mean the code does nothing but hash.
public struct MerkleBenchmark {
  /// What to measure.
  public struct Options: Sendable {
    /// Wallets inserted into the server tree (the tree then has wallets + 1 leaves).
    public var wallets: Int
    /// Proofs generated for random wallets.
    public var proofs: Int
    /// Changes the vault verifies and applies (half updates of existing wallets, half adds).
    public var changes: Int
    /// Changes per `apply` call, i.e. per token write.
    public var batchSize: Int
    /// Times the short measurements (decode, verify+apply and their raw hashing) are repeated,
    /// alternating measured code and raw baseline; the fastest of each counts, which keeps
    /// other processes on a shared machine out of the ratios.
    public var rounds: Int
    /// Where to create the throw-away device for the vault (a new directory; removed after).
    public var scratchDirectory: String

    public init(
      wallets: Int, proofs: Int = 100_000, changes: Int = 10_000, batchSize: Int = 1_000, rounds: Int = 5,
      scratchDirectory: String = NSTemporaryDirectory()
    ) {
      self.wallets = wallets
      self.proofs = proofs
      self.changes = changes
      self.batchSize = batchSize
      self.rounds = rounds
      self.scratchDirectory = scratchDirectory
    }
  }

  /// One measured figure and the raw hashing it is compared with.
  public struct Figure: Codable, Sendable {
    public var name: String
    public var count: Int
    public var seconds: Double
    /// Seconds of raw SHA-256 doing the same hashing, when the figure has one.
    public var rawSeconds: Double?
    /// SHA-256 calls the baseline made.
    public var rawHashes: Int?

    public var perSecond: Double { Double(count) / seconds }
    public var microsecondsEach: Double { seconds * 1e6 / Double(count) }
    /// Measured time over raw hashing time.
    public var ratio: Double? { rawSeconds.map { seconds / $0 } }
  }

  /// Everything one run measured.
  public struct Report: Codable, Sendable {
    public var wallets: Int
    /// Depth of the deepest leaf.
    public var treeDepth: Int
    /// Fastest of how many rounds the short measurements are.
    public var rounds: Int
    public var optimized: Bool
    public var figures: [Figure]
    /// Token writes (one per batch) and their mean cost.
    public var commits: Int
    public var millisecondsPerCommit: Double
    public var batchSize: Int

    /// The report as aligned text.
    public var text: String {
      var lines = [
        "merkle bench: \(wallets) wallets, tree depth \(treeDepth); decode and verify+apply: fastest of \(rounds) rounds\(optimized ? "" : " (DEBUG build: figures are not representative)")"
      ]
      for figure in figures {
        var line =
          "  \(figure.name.padding(toLength: 26, withPad: " ", startingAt: 0)) \(String(format: "%9d", figure.count)) in \(String(format: "%7.3f", figure.seconds)) s  \(String(format: "%11.0f", figure.perSecond))/s  \(String(format: "%8.3f", figure.microsecondsEach)) us each"
        if let raw = figure.rawSeconds, let hashes = figure.rawHashes, let ratio = figure.ratio {
          line +=
            "  | raw SHA-256 x\(hashes): \(String(format: "%.3f", raw)) s, \(String(format: "%.3f", raw * 1e6 / Double(figure.count))) us each  | ratio \(String(format: "%.2f", ratio))"
        }
        lines.append(line)
      }
      lines.append(
        "  token commits: \(commits) (one per batch of \(batchSize)), \(String(format: "%.3f", millisecondsPerCommit)) ms each, \(String(format: "%.3f", millisecondsPerCommit * 1000 / Double(batchSize))) us per change amortised"
      )
      return lines.joined(separator: "\n")
    }
  }

  public let options: Options
  private let logger: Logger

  public init(options: Options, logger: Logger) {
    self.options = options
    self.logger = logger
  }

  /// Runs every measurement.
  public func run() throws -> Report {
    let n = options.wallets
    guard n >= 1, options.changes >= 2, options.batchSize >= 1, options.proofs >= 1, options.rounds >= 1 else {
      throw BenchError("wallets, proofs, batch size and rounds must be at least 1, changes at least 2")
    }
    var figures = [Figure]()

    // 1. Inserts into the in-memory server tree.
    let leaves = (0..<n).map { Hash256.sha256(Array("leaf \($0)".utf8)) }
    var store = InMemoryMerkleNodeStore()
    store.reserveCapacity(leaves: n + 1 + options.changes)
    var tree = try MerkleTree(store: store)
    let insertTime = try measure {
      for leaf in leaves { try tree.add(walletHash: leaf) }
    }
    // The same parent hashes an insert computes: the split node and each ancestor.
    var parentHashes = 0
    for leafCount in 1...n { parentHashes += Merkle.depth(of: UInt64(leafCount)) + 1 }
    let insertRaw = Self.rawParentHashes(parentHashes)
    figures.append(
      Figure(name: "tree insert", count: n, seconds: insertTime, rawSeconds: insertRaw, rawHashes: parentHashes))
    logger.info("inserts measured", metadata: ["bench.wallets": "\(n)", "bench.seconds": "\(insertTime)"])

    // 2. Proofs for random wallets.
    var random = SystemRandomNumberGenerator()
    let proofIDs = (0..<options.proofs).map { _ in UInt64.random(in: 1...UInt64(n), using: &random) }
    var sink = Hash256.zero
    let proofTime = try measure {
      for id in proofIDs { sink = try tree.proof(ofWallet: id).siblings[0] }
    }
    figures.append(Figure(name: "proof generation", count: options.proofs, seconds: proofTime))
    _ = sink

    // 3. The vault: real wallet data for the wallets it updates, then a mix of updates and adds.
    let updates = min(options.changes / 2, n)
    let updatedIDs = Array(
      Set((0..<updates * 4).map { _ in UInt64.random(in: 1...UInt64(n), using: &random) }).prefix(updates))
    guard updatedIDs.count == updates else { throw BenchError("could not pick \(updates) distinct wallets to update") }
    var current = [UInt64: [UInt8]]()
    for id in updatedIDs {
      let encoding = try Self.wallet(id: id, revision: 0)
      current[id] = encoding
      try tree.update(walletID: id, walletHash: Hash256.sha256(encoding))
    }
    let start = RootState(epoch: 0, leafCount: tree.leafCount, root: try tree.root())
    var changes = [MerkleChange]()
    var hashInputs = [Int]()  // sizes of the wallet encodings the vault hashes
    var parentCount = 0
    for index in 0..<options.changes {
      if index % 2 == 0 && index / 2 < updates {
        let id = updatedIDs[index / 2]
        let new = try Self.wallet(id: id, revision: 1)
        changes.append(try tree.updateChange(walletID: id, old: current[id]!, new: new))
        hashInputs += [current[id]!.count, new.count]
        parentCount += 2 * (try tree.path(ofWallet: id).depth)
        try tree.update(walletID: id, walletHash: Hash256.sha256(new))
      } else {
        let new = try Self.wallet(id: tree.nextWalletID, revision: 0)
        changes.append(try tree.addChange(wallet: new))
        hashInputs.append(new.count)
        parentCount += 2 * Merkle.depth(of: Merkle.currentLeaf(leafCount: tree.leafCount)) + 1
        try tree.add(walletHash: Hash256.sha256(new))
      }
    }
    // 3a. Decoding (and validating) one wallet encoding, the vault's work besides hashing.
    let encodings = updatedIDs.prefix(1_000).map { current[$0]! }
    let repeats = max(1, 10_000 / max(encodings.count, 1))
    let decodeSizes = Array(repeating: encodings.first?.count ?? 0, count: repeats * encodings.count)
    var decodeTime = Double.infinity
    var decodeRaw = Double.infinity
    var decoded = 0
    // 3b. Verify+apply alone (what the vault computes per change), from the same start each round.
    var verifyTime = Double.infinity
    var rawVault = Double.infinity
    var verifier = MerkleVerifier(state: start)
    for _ in 0..<options.rounds {
      decodeTime = min(
        decodeTime,
        try measure {
          for _ in 0..<repeats {
            for encoding in encodings { decoded &+= Int(try WalletData.decode(encoding).threshold) }
          }
        })
      decodeRaw = min(decodeRaw, Self.rawHashes(ofSizes: decodeSizes))
      verifier = MerkleVerifier(state: start)
      verifyTime = min(
        verifyTime,
        try measure {
          for change in changes { try verifier.apply(change) }
        })
      rawVault = min(rawVault, Self.rawParentHashes(parentCount) + Self.rawHashes(ofSizes: hashInputs))
    }
    guard verifier.state.root == (try tree.root()), decoded > 0 else {
      throw BenchError("the vault's root after the changes differs from the server tree's")
    }
    figures.append(
      Figure(
        name: "wallet decode+validate", count: decodeSizes.count, seconds: decodeTime, rawSeconds: decodeRaw,
        rawHashes: decodeSizes.count))
    figures.append(
      Figure(
        name: "vault verify+apply", count: changes.count, seconds: verifyTime, rawSeconds: rawVault,
        rawHashes: parentCount + hashInputs.count))

    // 3c. The same through WalletRoot against a real custody partition, one token write a batch.
    let (applyTime, commitSeconds, commits) = try measureVault(
      start: start, changes: changes, expected: try tree.root())
    figures.append(
      Figure(
        name: "vault apply with commits", count: changes.count, seconds: applyTime, rawSeconds: rawVault,
        rawHashes: parentCount + hashInputs.count))

    #if DEBUG
    let optimized = false
    #else
    let optimized = true
    #endif
    return Report(
      wallets: n, treeDepth: Merkle.depth(of: UInt64(2 * n + 1)), rounds: options.rounds, optimized: optimized,
      figures: figures, commits: commits,
      millisecondsPerCommit: commitSeconds * 1000 / Double(max(commits, 1)), batchSize: options.batchSize)
  }

  /// WalletRoot.apply over `changes` in batches, on a throw-away device: total seconds, seconds
  /// spent in token commits alone (measured separately on the same store), commit count.
  private func measureVault(
    start: RootState, changes: [MerkleChange], expected: Hash256
  ) throws -> (Double, Double, Int) {
    let scratch = try BenchmarkDevice(in: options.scratchDirectory, logger: logger)
    defer { scratch.remove() }
    let store = try RootStateStore.initialize(
      session: scratch.session, state: start, syncDirectory: scratch.tokenDirectory, logger: logger)
    let root = WalletRoot(store: store, logger: logger)
    var commits = 0
    let total = try measure {
      var index = 0
      while index < changes.count {
        let batch = Array(changes[index..<min(index + options.batchSize, changes.count)])
        let outcome = try root.apply(batch)
        guard outcome.rejection == nil else {
          throw BenchError("the vault refused change \(index + outcome.rejection!.index): \(outcome.rejection!.error)")
        }
        commits += 1
        index += batch.count
      }
    }
    guard root.state.root == expected else { throw BenchError("the vault committed another root than the server's") }
    // The commit alone, as often as above, on the same store.
    var state = root.state
    let commitTime = try measure {
      for _ in 0..<commits {
        state.epoch += 1
        try store.commit(state)
      }
    }
    return (total, commitTime, commits)
  }

  /// Wallet `id` as the vault sees it: two passkeys and a bot, a full policy.
  static func wallet(id: UInt64, revision: UInt64) throws -> [UInt8] {
    func key(_ tag: String, _ count: Int) -> [UInt8] {
      var bytes = [UInt8]()
      var counter = 0
      while bytes.count < count {
        bytes += Hash256.sha256(Array("\(tag) \(id) \(counter)".utf8)).bytes
        counter += 1
      }
      return Array(bytes.prefix(count))
    }
    func passkey(_ name: String, _ algorithm: COSEPublicKey.Algorithm) throws -> Approver {
      let raw = algorithm == .es256 ? [0x04] + key(name, 64) : key(name, 32)
      return Approver(
        id: name,
        credential: .passkey(
          Passkey(
            credentialID: key(name + " credential", 32),
            publicKey: try COSEPublicKey.encode(algorithm, rawPublicKey: raw),
            rpID: "custody.example", allowedOrigins: ["https://custody.example"])))
    }
    return try WalletData(
      id: id, threshold: 2, custodial: true,
      approvers: [
        try passkey("alice", .es256), try passkey("bob", .edDSA),
        Approver(id: "ops-bot", credential: .bot(BotKey(algorithm: .ed25519, publicKey: key("bot", 32)))),
      ],
      curve: .secp256k1, derivation: .bip32, requestNonce: revision,
      policy: Policy(
        perTransactionLimit: Amount(1_000_000_000),
        rollingWindow: RollingLimit(seconds: 86_400, limit: Amount(5_000_000_000)),
        destinationAllowlist: ["0x52908400098527886E0F7030069857D2E4169EE7"]),
      policyState: PolicyState(spent: revision == 0 ? [] : [.init(timestamp: 1_700_000_000, amount: Amount(revision))])
    ).encoded()
  }

  /// Seconds for `count` SHA-256 calls over 64 bytes, each hashing the previous result, as
  /// a Merkle path does.
  static func rawParentHashes(_ count: Int) -> Double {
    var value = Hash256.sha256([1])
    let sibling = Hash256.sha256([2])
    let seconds =
      (try? measure {
        for _ in 0..<count { value = Hash256.parent(value, sibling) }
      }) ?? 0
    blackHole(value)
    return seconds
  }

  /// Seconds for one SHA-256 call over each of `sizes` bytes.
  static func rawHashes(ofSizes sizes: [Int]) -> Double {
    let buffer = [UInt8](repeating: 0xA5, count: (sizes.max() ?? 0) + 1)
    var value = Hash256.zero
    let seconds =
      (try? measure {
        buffer.withUnsafeBytes { raw in
          for size in sizes { value = Hash256.sha256(UnsafeRawBufferPointer(rebasing: raw[0..<size])) }
        }
      }) ?? 0
    blackHole(value)
    return seconds
  }
}

/// Seconds `body` takes.
func measure(_ body: () throws -> Void) throws -> Double {
  let clock = ContinuousClock()
  let start = clock.now
  try body()
  let elapsed = clock.now - start
  return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

@inline(never)
func blackHole(_ value: Hash256) {
  if value == Hash256.sha256([0xFF, 0xFE]) { print("") }
}

/// A benchmark that could not run as asked.
public struct BenchError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}
