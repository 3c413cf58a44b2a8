import Crypto
import Custody

// Shared by the Custody and Vault tests: sample wallets, a seeded random generator, and a
// naive Merkle tree that follows the paper's words instead of the heap arithmetic.

/// SplitMix64: a small seeded generator, so a failing random test can be replayed.
public struct SplitMix64: RandomNumberGenerator {
  private var state: UInt64
  public init(seed: UInt64) { state = seed }
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// Wallets with real keys (derived from the id and a revision, so they are reproducible).
public enum SampleWallet {
  /// 32 bytes that depend on `parts` only.
  static func seed(_ parts: String) -> [UInt8] {
    Array(SHA256.hash(data: Array(parts.utf8)))
  }

  /// A passkey with a real P-256 (ES256) or Ed25519 (EdDSA) key.
  public static func passkey(_ name: String, edDSA: Bool = false) -> Passkey {
    let raw: [UInt8]
    if edDSA {
      raw = Array(
        try! Curve25519.Signing.PrivateKey(rawRepresentation: seed("passkey " + name)).publicKey.rawRepresentation)
    } else {
      raw = Array(try! P256.Signing.PrivateKey(rawRepresentation: seed("passkey " + name)).publicKey.x963Representation)
    }
    return Passkey(
      credentialID: seed("credential " + name),
      publicKey: try! COSEPublicKey.encode(edDSA ? .edDSA : .es256, rawPublicKey: raw),
      rpID: "custody.example", allowedOrigins: ["https://custody.example"], signCount: 0,
      requireUserVerification: true)
  }

  /// A bot key on P-256 or Ed25519.
  public static func bot(_ name: String, ed25519: Bool = false) -> BotKey {
    ed25519
      ? BotKey(
        algorithm: .ed25519,
        publicKey: Array(
          try! Curve25519.Signing.PrivateKey(rawRepresentation: seed("bot " + name)).publicKey.rawRepresentation))
      : BotKey(
        algorithm: .p256,
        publicKey: Array(
          try! P256.Signing.PrivateKey(rawRepresentation: seed("bot " + name)).publicKey.x963Representation))
  }

  /// Wallet `id` at `revision`: two passkeys and a bot, a 2-of-3 threshold, a full policy.
  public static func make(id: UInt64, revision: UInt64 = 0) -> WalletData {
    WalletData(
      id: id, threshold: 2, custodial: id % 2 == 1,
      approvers: [
        Approver(id: "alice", credential: .passkey(passkey("alice \(id)"))),
        Approver(id: "bob", credential: .passkey(passkey("bob \(id)", edDSA: true))),
        Approver(id: "treasury-bot", credential: .bot(bot("treasury \(id)", ed25519: id % 3 == 0))),
      ],
      curve: id % 4 == 0 ? .ed25519 : .secp256k1, derivation: id % 4 == 0 ? .slip10 : .bip32, requestNonce: revision,
      policy: Policy(
        perTransactionLimit: Amount(decimal: "5000000000000000000"),
        rollingWindow: RollingLimit(seconds: 86_400, limit: Amount(decimal: "20000000000000000000")!),
        destinationAllowlist: [
          "0x52908400098527886E0F7030069857D2E4169EE7", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        ],
        timeOfDay: TimeOfDayWindow(fromMinute: 8 * 60, toMinute: 20 * 60)),
      policyState: PolicyState(
        spent: revision == 0 ? [] : [.init(timestamp: 1_700_000_000 + revision, amount: Amount(revision * 1_000))]))
  }

  /// The encoding of `make(id:revision:)`.
  public static func encoding(id: UInt64, revision: UInt64 = 0) -> [UInt8] {
    try! make(id: id, revision: revision).encoded()
  }
}

/// The paper's tree built literally: nodes that split, a current leaf found by looking for the
/// leftmost leaf on the shallowest level, and a full recompute of every hash for the root. It
/// shares nothing with `Merkle`'s heap arithmetic, so agreeing with it means something.
public final class NaiveWalletTree {
  final class Node {
    var left: Node?
    var right: Node?
    var leaf: Hash256
    var walletID: UInt64
    init(leaf: Hash256, walletID: UInt64) {
      self.leaf = leaf
      self.walletID = walletID
    }
    var isLeaf: Bool { left == nil }
  }

  private var rootNode = Node(leaf: .zero, walletID: 0)
  public private(set) var walletCount: UInt64 = 0

  public init() {}

  /// Every hash recomputed from the leaves.
  public var root: Hash256 { Self.hash(rootNode) }

  static func hash(_ node: Node) -> Hash256 {
    node.isLeaf ? node.leaf : Hash256.parent(hash(node.left!), hash(node.right!))
  }

  /// The leaf the next add splits: the leftmost leaf of the shallowest level holding a leaf.
  func currentLeaf() -> Node {
    var level = [rootNode]
    while true {
      if let leaf = level.first(where: \.isLeaf) { return leaf }
      level = level.flatMap { [$0.left!, $0.right!] }
    }
  }

  /// Splits the current leaf: old value to the left, the new wallet to the right.
  @discardableResult
  public func add(_ walletHash: Hash256) -> UInt64 {
    let node = currentLeaf()
    walletCount += 1
    node.left = Node(leaf: node.leaf, walletID: node.walletID)
    node.right = Node(leaf: walletHash, walletID: walletCount)
    return walletCount
  }

  public func set(walletID: UInt64, to value: Hash256) {
    find(walletID, in: rootNode, path: "")!.node.leaf = value
  }

  /// The wallet's path as the paper writes it (`L/R/L`), found by searching the tree.
  public func path(of walletID: UInt64) -> String? {
    find(walletID, in: rootNode, path: "").map { $0.path.isEmpty ? "root" : String($0.path.dropLast()) }
  }

  /// The path of the current leaf.
  public var currentLeafPath: String {
    let target = currentLeaf()
    return path(of: target.walletID)!
  }

  /// The paper's notation of the tree, e.g. `(0, W1)` after one wallet; removed leaves are 0.
  public var shape: String { Self.shape(rootNode) }

  static func shape(_ node: Node) -> String {
    if node.isLeaf { return node.walletID == 0 || node.leaf == .zero ? "0" : "W\(node.walletID)" }
    return "(\(shape(node.left!)), \(shape(node.right!)))"
  }

  private func find(_ walletID: UInt64, in node: Node, path: String) -> (node: Node, path: String)? {
    if node.isLeaf { return node.walletID == walletID ? (node, path) : nil }
    return find(walletID, in: node.left!, path: path + "L/") ?? find(walletID, in: node.right!, path: path + "R/")
  }
}
