/// A request to the vault, exactly as its approvers approve it (DESIGN.md section 8): the
/// wallet, the wallet data it was made against, the operation with its parameters, a nonce, an
/// expiry, and the chain data of signing requests.
///
/// The encoding is deterministic CBOR with a domain tag and a version, and it is what approvers
/// sign: a passkey's WebAuthn challenge is SHA-256 of it, a bot signs it as it is. So one
/// request has one encoding, and `decode` refuses everything else:
///
/// ```
/// request   = ["custos/request", 1, {
///               0: wallet id (uint; 0 for create-wallet: the vault assigns the id),
///               1: wallet hash the request was made against (32 bytes; zero for create-wallet),
///               2: [operation name (text), parameters (map)],
///               3: nonce (uint >= 1; the wallet's next request nonce must exceed its last),
///               4: expiry (uint, Unix seconds UTC: refused at or after it),
///               ?5: chain data (signing operations only, required there) }]
/// chain     = {0: CAIP-2 chain id ("eip155:1"), 1: key path [uint32 child index, ...]}
///             (hardened indices carry 0x80000000, as BIP-32 serialises them)
/// operation = ["create-wallet", {0: threshold, 1: custodial (bool), 2: [approver, ...],
///                                3: curve, 4: derivation, 5: policy}]
///           / ["update-wallet", {0: threshold, 1: [approver, ...], 2: policy}]
///           / ["remove-wallet", {}]
///           / ["sign-eip1559", transaction]          (see `EIP1559Transaction.cbor`)
///           / ["sign-personal-message", {0: message (bytes)}]
/// ```
///
/// Approvers and policies are written exactly as in `WalletData`. The key path is numbers, not
/// text, so that `m/44'/...` and `m/44h/...` cannot be two encodings of one request.
public struct RequestEnvelope: Sendable, Hashable {
  /// The text that opens every request encoding.
  public static let domain = "custos/request"
  /// The version this build writes and reads.
  public static let currentVersion: UInt64 = 1
  /// Longest personal message the vault signs.
  public static let maxMessageLength = 16_384

  public var version: UInt64
  /// The wallet the request is for; 0 for `createWallet`.
  public var walletID: UInt64
  /// SHA-256 of the wallet data the request was made against (zero for `createWallet`): a
  /// request made before the wallet changed is refused.
  public var walletHash: Hash256
  public var operation: Operation
  /// Per-wallet request nonce: accepted only when greater than the wallet's last one, which
  /// it then becomes. For `createWallet`, the new wallet's first nonce.
  public var nonce: UInt64
  /// Unix seconds (UTC); the vault refuses the request at or after this time.
  public var expiry: UInt64
  /// Chain and key of a signing operation; nil for the others.
  public var chain: ChainData?

  public init(
    version: UInt64 = RequestEnvelope.currentVersion, walletID: UInt64, walletHash: Hash256,
    operation: Operation, nonce: UInt64, expiry: UInt64, chain: ChainData? = nil
  ) {
    self.version = version
    self.walletID = walletID
    self.walletHash = walletHash
    self.operation = operation
    self.nonce = nonce
    self.expiry = expiry
    self.chain = chain
  }

  /// What the request asks for.
  public enum Operation: Sendable, Hashable {
    /// Create a wallet with this configuration; the vault assigns its id, draws its seed and
    /// seals it. Approved by every proposed approver (each proves possession of its key).
    case createWallet(WalletConfiguration)
    /// Replace the wallet's threshold, approvers and policy; approved by the current quorum.
    case updateWallet(WalletConfigurationChange)
    /// Remove the wallet (its leaf becomes zero); approved by the current quorum.
    case removeWallet
    /// Sign an EIP-1559 transaction the vault marshals from these fields.
    case signEIP1559(EIP1559Transaction)
    /// Sign an EIP-191 personal message ("\u{19}Ethereum Signed Message:\n" + length + message).
    case signPersonalMessage([UInt8])

    /// The operation's name in the encoding.
    public var name: String {
      switch self {
      case .createWallet: "create-wallet"
      case .updateWallet: "update-wallet"
      case .removeWallet: "remove-wallet"
      case .signEIP1559: "sign-eip1559"
      case .signPersonalMessage: "sign-personal-message"
      }
    }

    /// Whether the operation signs for a chain (and so carries chain data).
    public var isSigning: Bool {
      switch self {
      case .signEIP1559, .signPersonalMessage: true
      default: false
      }
    }

    var parametersCBOR: CBOR {
      switch self {
      case .createWallet(let configuration): configuration.cbor
      case .updateWallet(let change): change.cbor
      case .removeWallet: .map([CBOR.Entry]())
      case .signEIP1559(let transaction): transaction.cbor
      case .signPersonalMessage(let message): .map([(UInt64(0), CBOR.bytes(message))])
      }
    }
  }

  /// The request as a CBOR value (not validated).
  public var cbor: CBOR {
    var fields: [(UInt64, CBOR)] = [
      (0, .unsigned(walletID)), (1, .bytes(walletHash.bytes)),
      (2, .array([.text(operation.name), operation.parametersCBOR])), (3, .unsigned(nonce)),
      (4, .unsigned(expiry)),
    ]
    if let chain { fields.append((5, chain.cbor)) }
    return .array([.text(RequestEnvelope.domain), .unsigned(version), CBOR.map(fields)])
  }

  /// The deterministic encoding: the bytes approvers sign. Fails when the request is not valid.
  public func encoded() throws(RequestEnvelopeError) -> [UInt8] {
    try validate()
    do {
      return try cbor.encoded()
    } catch {
      throw RequestEnvelopeError(.cbor, field: "", "cannot encode: \(error)")
    }
  }

  /// Checks every rule a request must meet to be encoded or accepted.
  public func validate() throws(RequestEnvelopeError) {
    guard version == RequestEnvelope.currentVersion else {
      throw RequestEnvelopeError(.unsupportedVersion, field: "version", "version \(version) is not supported")
    }
    guard nonce >= 1 else {
      throw RequestEnvelopeError(.invalidValue, field: "nonce", "request nonces start at 1")
    }
    if case .createWallet = operation {
      guard walletID == 0, walletHash.isZero else {
        throw RequestEnvelopeError(
          .invalidValue, field: "walletID",
          "a create-wallet request names no wallet: wallet id 0 and a zero wallet hash (the vault assigns the id)")
      }
    } else if walletID == 0 {
      throw RequestEnvelopeError(.invalidValue, field: "walletID", "wallet ids start at 1")
    }
    guard operation.isSigning == (chain != nil) else {
      throw RequestEnvelopeError(
        operation.isSigning ? .missingField : .invalidValue, field: "chain",
        operation.isSigning
          ? "a \(operation.name) request carries chain data (chain and key path)"
          : "a \(operation.name) request carries no chain data")
    }
    do throws(WalletDataError) {
      switch operation {
      case .createWallet(let configuration): try configuration.validate()
      case .updateWallet(let change): try change.validate()
      case .removeWallet: break
      case .signEIP1559(let transaction): try transaction.validate(FieldPath("operation"))
      case .signPersonalMessage(let message):
        guard (1...RequestEnvelope.maxMessageLength).contains(message.count) else {
          throw WalletDataError(
            .invalidValue, field: "operation.message",
            "a personal message has 1 to \(RequestEnvelope.maxMessageLength) bytes, not \(message.count)")
        }
      }
    } catch {
      throw RequestEnvelopeError(wrapping: error, under: "operation")
    }
    if let chain {
      try chain.validate()
      if case .signEIP1559(let transaction) = operation, chain.eip155ChainID != transaction.chainID {
        throw RequestEnvelopeError(
          .invalidValue, field: "chain",
          "the chain data names \(chain.chain) but the transaction is for chain id \(transaction.chainID)")
      }
    }
  }

  /// SHA-256 of the encoding: the challenge a passkey signs (base64url in clientDataJSON).
  public static func challenge(of encoding: [UInt8]) -> Hash256 {
    Hash256.sha256(encoding)
  }
}

/// A proposed wallet configuration (everything but the id, nonce and state, which the vault
/// sets): `{0: threshold, 1: custodial, 2: [approver, ...], 3: curve, 4: derivation, 5: policy}`.
public struct WalletConfiguration: Sendable, Hashable {
  public var threshold: UInt64
  public var custodial: Bool
  public var approvers: [Approver]
  public var curve: WalletData.Curve
  public var derivation: WalletData.DerivationScheme
  public var policy: Policy

  public init(
    threshold: UInt64, custodial: Bool = true, approvers: [Approver], curve: WalletData.Curve = .secp256k1,
    derivation: WalletData.DerivationScheme = .bip32, policy: Policy = Policy()
  ) {
    self.threshold = threshold
    self.custodial = custodial
    self.approvers = approvers
    self.curve = curve
    self.derivation = derivation
    self.policy = policy
  }

  /// The wallet this configuration makes with id `id` and first nonce `nonce` (not validated).
  public func wallet(id: UInt64, requestNonce: UInt64) -> WalletData {
    WalletData(
      id: id, threshold: threshold, custodial: custodial, approvers: approvers, curve: curve, derivation: derivation,
      requestNonce: requestNonce, policy: policy)
  }

  var cbor: CBOR {
    let fields: [(UInt64, CBOR)] = [
      (0, .unsigned(threshold)), (1, .bool(custodial)), (2, .array(approvers.map(\.cbor))),
      (3, .text(curve.rawValue)), (4, .text(derivation.rawValue)), (5, policy.cbor),
    ]
    return .map(fields)
  }

  /// The rules of wallet data (one set of rules: they are `WalletData.validate`'s).
  func validate() throws(WalletDataError) {
    try wallet(id: 1, requestNonce: 1).validate()
  }
}

/// A new threshold, approver list and policy for an existing wallet:
/// `{0: threshold, 1: [approver, ...], 2: policy}`.
public struct WalletConfigurationChange: Sendable, Hashable {
  public var threshold: UInt64
  public var approvers: [Approver]
  public var policy: Policy

  public init(threshold: UInt64, approvers: [Approver], policy: Policy) {
    self.threshold = threshold
    self.approvers = approvers
    self.policy = policy
  }

  /// `wallet` with this configuration (its id, curve, derivation, nonce and state kept).
  public func applied(to wallet: WalletData) -> WalletData {
    var changed = wallet
    changed.threshold = threshold
    changed.approvers = approvers
    changed.policy = policy
    return changed
  }

  var cbor: CBOR {
    let fields: [(UInt64, CBOR)] = [(0, .unsigned(threshold)), (1, .array(approvers.map(\.cbor))), (2, policy.cbor)]
    return .map(fields)
  }

  func validate() throws(WalletDataError) {
    try applied(
      to: WalletData(id: 1, threshold: 1, custodial: true, approvers: [], curve: .secp256k1, derivation: .bip32)
    )
    .validate()
  }
}

/// The chain a signing request is for and the key that signs: a CAIP-2 chain id and a BIP-32
/// path as child indices.
public struct ChainData: Sendable, Hashable {
  /// CAIP-2 chain id; this version signs for `eip155:<chain id>` only.
  public var chain: String
  /// Child indices from the wallet's master key; hardened ones carry 0x80000000.
  public var path: [UInt32]

  /// The most levels a path may have (BIP-32's depth byte).
  public static let maxPathLength = 255
  /// The hardened bit of a child index.
  public static let hardened: UInt32 = 0x8000_0000
  /// m/44'/60'/0'/0/0: the first account of BIP-44's Ethereum coin type, what wallets use by
  /// default (and what the request builders put in unless told otherwise).
  public static let defaultEthereumPath: [UInt32] = [44 | hardened, 60 | hardened, hardened, 0, 0]

  public init(chain: String, path: [UInt32]) {
    self.chain = chain
    self.path = path
  }

  /// An Ethereum chain (`eip155:<chainID>`) and key path (by default m/44'/60'/0'/0/0).
  public static func ethereum(chainID: UInt64, path: [UInt32] = defaultEthereumPath) -> ChainData {
    ChainData(chain: "eip155:\(chainID)", path: path)
  }

  /// The chain id of an `eip155:` chain, nil for anything else.
  public var eip155ChainID: UInt64? {
    guard chain.hasPrefix("eip155:") else { return nil }
    let digits = chain.dropFirst(7)
    guard !digits.isEmpty, digits.utf8.count <= 20, digits.first != "0",
      digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
    else { return nil }
    return UInt64(digits)
  }

  /// The path as BIP-32 writes it: `m/44'/60'/0'/0/0`.
  public var pathText: String {
    (["m"] + path.map { $0 & ChainData.hardened != 0 ? "\($0 & ~ChainData.hardened)'" : "\($0)" })
      .joined(separator: "/")
  }

  var cbor: CBOR {
    let fields: [(UInt64, CBOR)] = [(0, .text(chain)), (1, .array(path.map { .unsigned(UInt64($0)) }))]
    return .map(fields)
  }

  func validate() throws(RequestEnvelopeError) {
    guard eip155ChainID != nil else {
      throw RequestEnvelopeError(
        .invalidValue, field: "chain.chain",
        "'\(chain)' is not an eip155 chain id (eip155: and a decimal chain id without leading zeros, at least 1)")
    }
    guard path.count <= ChainData.maxPathLength else {
      throw RequestEnvelopeError(
        .invalidValue, field: "chain.path", "a key path has at most \(ChainData.maxPathLength) levels")
    }
  }
}

/// A request encoding or value that is refused: which field and which rule. The rules are
/// those of every Custos object's encoding, so the codes are wallet data's
/// (`WalletDataError.Code`), with `unknownOperation` for an operation this version lacks.
public struct RequestEnvelopeError: Error, Hashable, Sendable, CustomStringConvertible {
  public typealias Code = WalletDataError.Code

  public let code: Code
  /// The field, as a path (`operation.approvers[1].rpID`); empty for the whole request.
  public let field: String
  public let reason: String

  public init(_ code: Code, field: String, _ reason: String) {
    self.code = code
    self.field = field
    self.reason = reason
  }

  /// A rule broken while reading the request or checking the wallet data it proposes, with
  /// its field put under `prefix` when one is given.
  init(wrapping error: WalletDataError, under prefix: String?) {
    var field = error.field
    if let prefix, field != prefix, !field.hasPrefix(prefix + ".") {
      field = field.isEmpty ? prefix : prefix + "." + field
    }
    self.init(error.code, field: field, error.reason)
  }

  public var description: String {
    field.isEmpty ? "request \(code): \(reason)" : "request \(code) at \(field): \(reason)"
  }
}

extension WalletDataError.Code {
  /// An operation name this version does not know (requests only).
  public static let unknownOperation = Self("unknownOperation")
}
