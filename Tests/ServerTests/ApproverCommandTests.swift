import Custody
import Foundation
import GRDB
import ProcessSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `custos approve` and `custos passkey approve` as their users run them: the real executable
/// against a real custos-server and custos-hsm, with key files from `custos approve keygen` and
/// `custos passkey create`.
@Suite(.serialized) struct ApproverCommandTests {
  /// Key files for bot-a (P-256), bot-b (Ed25519) and carol (a software ES256 passkey).
  struct Keys {
    let directory: TemporaryDirectory
    var botA: String { directory.appending("bot-a.key") }
    var botB: String { directory.appending("bot-b.key") }
    var carol: String { directory.appending("carol.passkey") }
    var enrolments: [[String: Any]] = []

    init() throws {
      directory = try TemporaryDirectory("custos-approver-keys")
      for (arguments, file) in [
        (["approve", "keygen", "--algorithm", "p256", "--id", "bot-a"], botA),
        (["approve", "keygen", "--algorithm", "ed25519", "--id", "bot-b"], botB),
        (["passkey", "create", "--id", "carol"], carol),
      ] {
        let made = try custos(arguments + ["--out", file])
        #expect(made.status == 0, "\(made.error)")
        var info = stat()
        stat(file, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        let line = try #require(made.output.split(separator: "\n").first { $0.hasPrefix("enrol as: ") })
        let json = try JSONSerialization.jsonObject(with: Data(line.dropFirst("enrol as: ".count).utf8))
        enrolments.append(try #require(json as? [String: Any]))
        // The private key is in the file and nowhere in what was printed.
        let file = try JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: file)!) as? [String: Any]
        let secret = try #require(file?["privateKey"] as? String)
        #expect(!made.output.contains(secret) && !made.error.contains(secret))
      }
    }
  }

  static func custos(_ arguments: [String]) throws -> ChildProcess.Completion {
    try runProcess(builtExecutable("custos"), arguments)
  }

  /// `custos approve` (or `custos passkey approve` for a passkey file) of one request.
  static func approve(
    _ stack: Stack, _ key: String, _ requestID: String, extra: [String] = [], server: String? = nil
  ) throws -> ChildProcess.Completion {
    let command = key.hasSuffix(".passkey") ? ["passkey", "approve"] : ["approve"]
    return try custos(command + ["--server", server ?? stack.api.baseURL, "--key", key] + extra + [requestID])
  }

  /// The 2-of-3 wallet of the three keys, its creation approved by each through the CLI.
  static func createWallet(_ stack: Stack, _ keys: Keys) async throws -> Int {
    let proposed = try await stack.api.send(
      "POST", "/v1/wallets", json: ["threshold": 2, "approvers": keys.enrolments], operation: "createWallet")
    let id = try #require(proposed.json["id"] as? String, "\(proposed)")
    for key in [keys.botA, keys.botB, keys.carol] {
      let approved = try approve(stack, key, id)
      #expect(approved.status == 0, "\(approved.output)\(approved.error)")
      #expect(approved.output.contains("create a wallet"))
    }
    let created = try await stack.waitForRequest(id) { $0["status"] as? String == "completed" }
    return try #require((created["result"] as? [String: Any])?["walletId"] as? Int)
  }

  /// Approvals stored for a request, read from the server's database.
  static func storedApprovals(_ stack: Stack, _ requestID: String) throws -> [String] {
    let queue = try DatabaseQueue(path: stack.database)
    return try queue.read { db in
      try String.fetchAll(
        db, sql: "SELECT approver_id FROM approvals WHERE request_id = ? ORDER BY 1", arguments: [requestID])
    }
  }

  @Test func approvesAMatchingRequestAndRefusesANonCanonicalOrMismatchedOne() async throws {
    let stack = try await Stack()
    defer { stack.stop() }
    let keys = try Keys()
    _ = try await stack.waitForAgreement()
    let walletID = try await Self.createWallet(stack, keys)
    let addresses = try await stack.api.send(
      "GET", "/v1/wallets/\(walletID)/addresses", operation: "getWalletAddresses")
    let address = try #require((addresses.json["addresses"] as? [[String: Any]])?.first?["address"] as? String)

    // A transfer: bot-a approves with custos approve, carol with the software passkey.
    let transfer = try await stack.api.transfer(walletID)
    let first = try Self.approve(stack, keys.botA, transfer)
    #expect(first.status == 0, "\(first.error)")
    #expect(first.output.contains("sign an EIP-1559 transaction"))
    #expect(first.output.contains("0.001 ETH (1000000000000000 wei)"))
    #expect(first.output.contains("0x1111111111111111111111111111111111111111"))
    #expect(first.output.contains("request awaiting-approvals, 1 of 2 approvals"))
    let second = try Self.approve(stack, keys.carol, transfer)
    #expect(second.status == 0, "\(second.error)")
    #expect(second.output.contains("request completed, 2 of 2 approvals"))
    let line = try #require(second.output.split(separator: "\n").first { $0.hasPrefix("signed transaction: 0x02") })
    let signed = String(line.dropFirst("signed transaction: ".count))
    let recovered = try Self.custos(["eth", "sender", signed, "--expect", address])
    #expect(recovered.status == 0 && recovered.output.contains("sender: \(address)"), "\(recovered)")
    let other = try Self.custos(["eth", "sender", signed, "--expect", "0x" + String(repeating: "2", count: 40)])
    #expect(other.status != 0)

    // Approving twice is refused by the tool itself (it reads that it approved already).
    let again = try Self.approve(stack, keys.botA, transfer)
    #expect(again.status != 0 && again.error.contains("completed"), "\(again)")

    // A server that serves a non-canonical envelope (the version as a two-byte integer, the
    // challenge recomputed to match): refused, nothing posted.
    let noncanonical = try await stack.api.transfer(walletID, nonce: 1)
    let liar = try TamperingProxy(upstream: stack.api.baseURL, mode: "noncanonical")
    defer { liar.stop() }
    let refusedNoncanonical = try Self.approve(stack, keys.botA, noncanonical, server: liar.url)
    #expect(refusedNoncanonical.status != 0)
    #expect(refusedNoncanonical.error.contains("does not decode as a canonical request"), "\(refusedNoncanonical)")
    #expect(try Self.storedApprovals(stack, noncanonical).isEmpty)

    // A server that names another wallet than the envelope's: refused, nothing posted.
    let otherWallet = try TamperingProxy(upstream: stack.api.baseURL, mode: "wallet")
    defer { otherWallet.stop() }
    let refusedMismatch = try Self.approve(stack, keys.carol, noncanonical, server: otherWallet.url)
    #expect(refusedMismatch.status != 0)
    #expect(
      refusedMismatch.error.contains("is for wallet \(walletID + 98); its envelope is for wallet \(walletID)"),
      "\(refusedMismatch)")
    #expect(try Self.storedApprovals(stack, noncanonical).isEmpty)

    // A server that serves another, canonical request (a changed destination): the bot shows
    // and signs what it decoded, and the real server refuses that signature for its request.
    let changed = try TamperingProxy(upstream: stack.api.baseURL, mode: "destination")
    defer { changed.stop() }
    let refusedChanged = try Self.approve(stack, keys.botA, noncanonical, server: changed.url)
    #expect(refusedChanged.output.contains("0x2222222222222222222222222222222222222222"))
    #expect(refusedChanged.status != 0 && refusedChanged.error.contains("badSignature"), "\(refusedChanged)")
    #expect(try Self.storedApprovals(stack, noncanonical).isEmpty)

    // --wallet: a request for another wallet than the one expected is refused.
    let expected = try await stack.api.transfer(walletID, nonce: 3)
    let wrongWallet = try Self.approve(stack, keys.botA, expected, extra: ["--wallet", "\(walletID + 1)"])
    #expect(wrongWallet.status != 0 && wrongWallet.error.contains("not wallet \(walletID + 1) as expected"))
    // Bot-b's key presented as bot-a's: the tool signs, the server's check refuses it.
    let impostor = try Self.approve(stack, keys.botB, expected, extra: ["--as", "bot-a"])
    #expect(impostor.status != 0 && impostor.error.contains("approvalRefused"), "\(impostor)")
    #expect(try Self.storedApprovals(stack, expected).isEmpty)
    // --check-only shows it and signs nothing.
    let shown = try Self.approve(stack, keys.botA, expected, extra: ["--check-only"])
    #expect(shown.status == 0 && shown.output.contains("checked only: nothing signed"))
    #expect(try Self.storedApprovals(stack, expected).isEmpty)
    try stack.api.checkRecordedAnswers()
  }

  @Test func autoApprovesOnlyWhatTheRuleAllowsAndStopsOnSIGTERM() async throws {
    let stack = try await Stack()
    defer { stack.stop() }
    let keys = try Keys()
    _ = try await stack.waitForAgreement()
    let walletID = try await Self.createWallet(stack, keys)
    let rule = keys.directory.appending("rule.json")
    try """
    {"format": "custos-approval-rule", "version": 1, "wallets": [\(walletID)], "operations": ["sign-eip1559"],
     "chainIds": [1], "destinations": ["0x1111111111111111111111111111111111111111"],
     "maxValueWei": "10000000000000000"}
    """.write(toFile: rule, atomically: true, encoding: .utf8)
    let keyFile = keys.directory.appending("api.key")
    try Stack.makeKey(database: stack.database, scopes: ["requests:read"], name: "bot-a")
      .write(toFile: keyFile, atomically: true, encoding: .utf8)

    let allowed = try await stack.api.transfer(walletID)
    let elsewhere = try await stack.api.transfer(
      walletID, nonce: 1, to: "0x2222222222222222222222222222222222222222")
    let tooMuch = try await stack.api.transfer(walletID, valueWei: "1000000000000000000", nonce: 2)
    let auto = [
      "approve", "--server", stack.api.baseURL, "--key", keys.botA, "--auto", rule, "--api-key-file", keyFile,
    ]
    let round = try Self.custos(auto + ["--once"])
    #expect(round.status == 0, "\(round.error)")
    #expect(round.output.contains("stopped: 1 approved, 2 refused"), "\(round.output)")
    #expect(round.output.contains("refused \(elsewhere) (wallet \(walletID)): destination"))
    #expect(round.output.contains("refused \(tooMuch) (wallet \(walletID)): value 1000000000000000000 wei exceeds"))
    #expect(try Self.storedApprovals(stack, allowed) == ["bot-a"])
    #expect(try Self.storedApprovals(stack, elsewhere).isEmpty)
    #expect(try Self.storedApprovals(stack, tooMuch).isEmpty)

    // Without an API key the loop cannot list requests: a clear refusal before anything runs.
    let keyless = try Self.custos(Array(auto.dropLast(2)) + ["--once"])
    #expect(keyless.status != 0 && keyless.error.contains("CUSTOS_API_KEY"))

    // As a loop: it approves a request made while it runs, then stops on SIGTERM with exit 0.
    let loop = ChildProcess(executable: builtExecutable("custos"), arguments: auto + ["--interval", "0.1"])
    let output = Pipe()
    loop.process.standardOutput = output
    loop.process.standardError = FileHandle.nullDevice
    try loop.start()
    let later = try await stack.api.transfer(walletID, nonce: 3)
    let deadline = Date().addingTimeInterval(30)
    while try Self.storedApprovals(stack, later).isEmpty, Date() < deadline {
      try await Task.sleep(for: .milliseconds(50))
    }
    #expect(try Self.storedApprovals(stack, later) == ["bot-a"])
    #expect(loop.signalAndAwaitExit(SIGTERM).succeeded)
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    #expect(text.contains("approved \(later)") && text.contains("stopped: 1 approved, 2 refused"), "\(text)")
    // The refused requests stay refused by it (judged once) and unapproved.
    #expect(try Self.storedApprovals(stack, elsewhere).isEmpty)
  }
}

/// scripts/tampering-proxy.py: a compromised server in front of the real one (real HTTP), which
/// alters only what the approval route tells approvers.
final class TamperingProxy: @unchecked Sendable {
  let child: ChildProcess
  let url: String
  private let logs: TemporaryDirectory

  init(upstream: String, mode: String) throws {
    logs = try TemporaryDirectory("custos-proxy")
    child = ChildProcess(
      executable: "/usr/bin/env",
      arguments: ["python3", repositoryRoot + "/scripts/tampering-proxy.py", upstream, mode],
      standardErrorPath: logs.appending("stderr"))
    url = try child.startAndAwaitAnnouncement()
  }

  func stop() { child.signalAndAwaitExit(SIGTERM) }
}
