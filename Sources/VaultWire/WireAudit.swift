import Custody
import Foundation

/// The lockdown audit's second layer: from outside the device, with nothing but its socket and
/// the Crypto User credential, checks that nothing but the vault API is reachable. The first
/// layer (`custos lockdown audit --device`) checks the tokens themselves.
///
/// Checks, in order: status answers without a session; methods and services outside the
/// contract (reflection, health, channelz, a raw PKCS #11 pass-through) are unknown; every
/// session call without a session, or with a forged token, is refused; a malformed request is
/// refused and the device still answers; a wrong credential is refused and counted against the
/// backoff (skipped when it would start a lockout); the right credential opens a session; while
/// SEALED, session calls are refused; while READY, the root state answers; create, update,
/// remove and sign without valid approvals are refused; a closed session is refused.
public enum WireAudit {
  /// How one check came out.
  public enum Outcome: String, Sendable, Codable {
    /// The device behaved as expected.
    case pass = "PASS"
    /// It did not: the audit fails.
    case fail = "FAIL"
    /// Not applicable in the device's current state.
    case skipped = "SKIPPED"
  }

  /// One check.
  public struct Check: Sendable, Codable, Hashable {
    /// What is checked, e.g. `unknown-method`, `no-session`.
    public var check: String
    /// The method or service tried.
    public var subject: String
    public var expected: String
    public var observed: String
    public var outcome: Outcome
  }

  /// What the audit found.
  public struct Report: Sendable, Codable {
    public var endpoint: String
    public var device: String
    public var serial: String
    public var state: String
    public var checks: [Check]

    /// No check failed.
    public var passed: Bool { !checks.contains { $0.outcome == .fail } }

    public func count(_ outcome: Outcome) -> Int { checks.filter { $0.outcome == outcome }.count }

    /// A table for a terminal.
    public var text: String {
      var lines = [
        "Lockdown audit, second layer: device \(device) (serial \(serial)) at \(endpoint), \(state)"
      ]
      let width = checks.map(\.check.count).max() ?? 0
      let subjectWidth = checks.map(\.subject.count).max() ?? 0
      for check in checks {
        lines.append(
          "  \(check.outcome.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0))"
            + "\(check.check.padding(toLength: width + 2, withPad: " ", startingAt: 0))"
            + "\(check.subject.padding(toLength: subjectWidth + 2, withPad: " ", startingAt: 0))"
            + "expected \(check.expected); observed \(check.observed)")
      }
      lines.append(
        "\(checks.count) checks: \(count(.pass)) passed, \(count(.fail)) failed, \(count(.skipped)) skipped"
      )
      return lines.joined(separator: "\n")
    }

    public func json() throws -> String {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
      return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
  }

  /// Services and methods outside the contract that must be unknown to the device.
  public static let foreignMethods: [(service: String, method: String)] = [
    ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo"),
    ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.channelz.v1.Channelz", "GetTopChannels"),
    ("custos.vault.v1.Vault", "Pkcs11"),
    ("custos.vault.v1.Vault", "GetAttributeValue"),
    ("custos.pkcs11.v1.Token", "C_Sign"),
    ("custos.vault.v1.Operator", "Zeroize"),
  ]

  /// The Vault methods that need a session.
  public static let sessionMethods = [
    "GetRootState", "CreateWallet", "UpdateWallet", "RemoveWallet", "Sign", "GetPublicKey", "GetResult", "Pipeline",
    "Logout",
  ]

  static let vaultService = "custos.vault.v1.Vault"

  /// Runs every check against the device `client` is connected to.
  public static func run(client: VaultClient, credential: SecretBytes) async throws(VaultWireError) -> Report {
    let status = try await client.status()
    var checks = [Check]()
    func record(_ check: String, _ subject: String, expected: String, observed: String, _ outcome: Outcome) {
      checks.append(Check(check: check, subject: subject, expected: expected, observed: observed, outcome: outcome))
    }
    func describe(_ error: VaultWireError?) -> String {
      guard let error else { return "accepted" }
      return "\(error.code) (\(error.status))"
    }
    func expect(_ check: String, _ subject: String, _ error: VaultWireError?, _ codes: [VaultWireError.Code]) {
      let ok = error.map { codes.contains($0.code) } ?? false
      record(
        check, subject, expected: codes.map(\.name).joined(separator: " or "), observed: describe(error),
        ok ? .pass : .fail)
    }

    record(
      "status-without-session", "\(vaultService)/Status", expected: "answers",
      observed: "\(status.state), serial \(status.serial)", .pass)

    for (service, method) in foreignMethods {
      let error = await client.probe(service: service, method: method)
      expect("unknown-method", "\(service)/\(method)", error, [.unknownMethod])
    }

    for method in sessionMethods {
      let error = await client.probe(service: vaultService, method: method)
      expect("no-session", "\(vaultService)/\(method)", error, [.sessionRequired])
    }
    let forged = VaultSession(
      token: SecretBytes(utf8: "custos-s1-" + String(repeating: "0", count: 64)), expiresAt: Date(),
      idleTimeout: .seconds(0))
    expect(
      "forged-session", "\(vaultService)/GetRootState",
      await client.probe(service: vaultService, method: "GetRootState", session: forged), [.sessionRequired])

    let malformed = await client.probe(service: vaultService, method: "Login", body: [0xFF, 0xFF, 0xFF, 0xFF])
    let stillAnswers = (try? await client.status()) != nil
    record(
      "malformed-request", "\(vaultService)/Login", expected: "refused, and the device still answers",
      observed: "\(describe(malformed)); \(stillAnswers ? "still answers" : "no longer answers")",
      malformed != nil && stillAnswers ? .pass : .fail)

    // A wrong credential: refused and counted, unless counting it would start a lockout.
    let lockout = try await client.status().loginLockout
    if lockout.lockedUntil != nil {
      record(
        "wrong-credential", "\(vaultService)/Login", expected: "wrongCredential, counted",
        observed: "logins are locked out until \(lockout.lockedUntil!); not tried", .skipped)
    } else if lockout.attemptsBeforeLockout <= 1 {
      record(
        "wrong-credential", "\(vaultService)/Login", expected: "wrongCredential, counted",
        observed: "\(lockout.failures) failures already: one more would start a lockout; not tried", .skipped)
    } else {
      let guess = SecretBytes(utf8: "custos-cu1-" + Hex.encode(SystemRandom.bytes(32)))
      do {
        _ = try await client.login(credential: guess)
        record(
          "wrong-credential", "\(vaultService)/Login", expected: "wrongCredential, counted", observed: "accepted", .fail
        )
      } catch {
        let after = try await client.status().loginLockout
        let counted = after.failures == lockout.failures + 1
        record(
          "wrong-credential", "\(vaultService)/Login", expected: "wrongCredential, counted",
          observed:
            "\(describe(error)); failures \(lockout.failures) -> \(after.failures), \(error.attemptsBeforeLockout.map(String.init) ?? "?") before a lockout",
          error.code == .wrongCredential && counted ? .pass : .fail)
      }
    }

    let session: VaultSession
    do {
      session = try await client.login(credential: credential)
      record("login", "\(vaultService)/Login", expected: "a session", observed: "a session", .pass)
    } catch {
      record("login", "\(vaultService)/Login", expected: "a session", observed: describe(error), .fail)
      return Report(
        endpoint: client.endpoint.description, device: status.name, serial: status.serial,
        state: status.state.rawValue, checks: checks)
    }

    let state = try await client.status().state
    let emptyCall = VaultCall(envelope: [], approvals: [], proof: nil)
    if state == .sealed {
      expect(
        "sealed", "\(vaultService)/GetRootState", await probeError { _ = try await client.rootState(session) },
        [.sealed])
      expect(
        "sealed", "\(vaultService)/Sign", await probeError { _ = try await client.sign(emptyCall, session: session) },
        [.sealed])
      expect(
        "sealed", "\(vaultService)/GetPublicKey",
        await probeError {
          _ = try await client.publicKey(PublicKeyQuery(walletData: [], sealedSeed: [], path: "m"), session: session)
        }, [.sealed])
      for method in ["CreateWallet", "UpdateWallet", "RemoveWallet", "Sign"] {
        record(
          "unapproved-request", "\(vaultService)/\(method)", expected: "vaultRefused",
          observed: "the device is SEALED; unseal it and audit again", .skipped)
      }
    } else {
      for method in ["GetRootState", "Sign", "GetPublicKey"] {
        record(
          "sealed", "\(vaultService)/\(method)", expected: "sealed", observed: "the device is \(state); not applicable",
          .skipped)
      }
      do {
        let root = try await client.rootState(session)
        record("root-state", "\(vaultService)/GetRootState", expected: "the root state", observed: "\(root)", .pass)
      } catch {
        record(
          "root-state", "\(vaultService)/GetRootState", expected: "the root state", observed: describe(error), .fail)
      }
      let calls: [(String, @Sendable () async throws -> Void)] = [
        ("CreateWallet", { _ = try await client.createWallet(emptyCall, session: session) }),
        ("UpdateWallet", { _ = try await client.updateWallet(emptyCall, session: session) }),
        ("RemoveWallet", { _ = try await client.removeWallet(emptyCall, session: session) }),
        ("Sign", { _ = try await client.sign(emptyCall, session: session) }),
      ]
      for (method, call) in calls {
        let error = await probeError(call)
        let outcome: Outcome =
          switch error?.code {
          case .vaultRefused?, .invalidArgument?: .pass
          default: .fail
          }
        record(
          "unapproved-request", "\(vaultService)/\(method)", expected: "vaultRefused or invalidArgument",
          observed: describe(error), outcome)
      }
      // What a compromised server might try: invent a wallet whose only approver is a key it
      // holds, approve a transfer with it, and prove the wallet against the device's root. The
      // vault must refuse: the wallet is not a leaf of its tree.
      let forged = await probeError {
        let root = try await client.rootState(session)
        _ = try await client.sign(try Self.forgedWalletCall(root: root), session: session)
      }
      record(
        "forged-wallet", "\(vaultService)/Sign", expected: "vaultRefused (the wallet is not in the vault's tree)",
        observed: describe(forged), forged?.code == .vaultRefused ? .pass : .fail)
    }

    do {
      try await client.logout(session)
      let after = await probeError { _ = try await client.rootState(session) }
      expect("closed-session", "\(vaultService)/GetRootState", after, [.sessionRequired])
    } catch {
      record("closed-session", "\(vaultService)/Logout", expected: "closes", observed: describe(error), .fail)
    }
    return Report(
      endpoint: client.endpoint.description, device: status.name, serial: status.serial, state: status.state.rawValue,
      checks: checks)
  }

  /// A transfer from a wallet the caller made up (one bot approver, threshold 1), approved by
  /// that bot, with a proof that pretends the wallet is wallet 1 of the device's current tree.
  static func forgedWalletCall(root: RootState) throws -> VaultCall {
    let bot = try SoftwareBot(.p256)
    let wallet = WalletData(
      id: 1, threshold: 1, custodial: true, approvers: [bot.approver("forger")], curve: .secp256k1,
      derivation: .bip32, requestNonce: 1, policy: Policy())
    let walletData = try wallet.encoded()
    let transaction = EIP1559Transaction(
      chainID: 1, nonce: 0, maxPriorityFeePerGas: Amount(1), maxFeePerGas: Amount(1), gasLimit: 21_000,
      to: [UInt8](repeating: 0xEE, count: 20), value: Amount(1))
    let envelope = try RequestEnvelope(
      walletID: 1, walletHash: Hash256.sha256(walletData), operation: .signEIP1559(transaction), nonce: 2,
      expiry: UInt64(Date().timeIntervalSince1970) + 300, chain: .ethereum(chainID: 1)
    ).encoded()
    let depth = Merkle.path(to: Merkle.node(ofWallet: 1, leafCount: max(root.leafCount, 2))).depth
    return VaultCall(
      envelope: envelope, approvals: [try bot.approve(envelope, as: "forger").encoded()], walletData: walletData,
      sealedSeed: [UInt8](repeating: 0, count: 65),
      proof: ChangeProof(
        proof: MerkleProof(leaf: Hash256.sha256(walletData), siblings: Array(repeating: .zero, count: depth)),
        leafCount: root.leafCount, root: root.root))
  }

  private static func probeError(_ body: @Sendable () async throws -> Void) async -> VaultWireError? {
    do {
      try await body()
      return nil
    } catch {
      return VaultWireError.from(error)
    }
  }
}
