import Approver
import ArgumentParser
import Custody
import Dispatch
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `custos approve`: the bot approver (and, through `custos passkey approve`, the software
/// passkey) of the custody server's approval routes.
struct ApproveCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "approve",
    abstract: "Approve custody requests with a bot key: one request, or every request a rule allows (--auto).",
    discussion: """
      custos approve --server URL --key FILE REQUEST-ID fetches the request's envelope from the \
      server's approval route, checks it decodes canonically (decoded, re-encoded, compared byte \
      for byte) and is the request, wallet and kind the server says, shows it as Custody renders \
      it, signs it and posts the approval. custos approve keygen makes a key file.

      With --auto RULE-FILE it polls the rule's wallets (GET /v1/wallets/{id}/requests, with an \
      API key of scope requests:read from --api-key-file or CUSTOS_API_KEY) every --interval \
      seconds, approves the pending requests awaiting it that the rule allows, and refuses (logs) \
      the rest, each judged on the envelope it decoded itself. SIGTERM or SIGINT stops it after \
      the round under way; it then prints its totals and exits 0.
      """,
    subcommands: [Request.self, Keygen.self],
    defaultSubcommand: Request.self)

  struct Request: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "request", abstract: "Approve one request, or run --auto (the default subcommand).")

    @OptionGroup var target: ApprovalTargetOptions

    @Argument(help: "The request id (rq_ and 32 hex digits); not with --auto.")
    var requestID: String?

    @Option(help: "Approve, as a loop, the pending requests that this rule file allows.")
    var auto: String?

    @Option(
      name: .customLong("api-key-file"),
      help: "With --auto: a file holding an API key with scope requests:read (else CUSTOS_API_KEY).")
    var apiKeyFile: String?

    @Option(help: "With --auto: seconds between polls.")
    var interval: Double = 2

    @Flag(help: "With --auto: one round, then exit.")
    var once = false

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
      if auto == nil && requestID == nil { throw ValidationError("give a REQUEST-ID, or --auto RULE-FILE") }
      if auto != nil && requestID != nil { throw ValidationError("give either a REQUEST-ID or --auto, not both") }
      if auto == nil && (apiKeyFile != nil || once) {
        throw ValidationError("--api-key-file and --once go with --auto")
      }
      guard interval >= 0.05, interval <= 3600 else { throw ValidationError("--interval is 0.05 to 3600 seconds") }
    }

    func run() async throws {
      let logger = logging.makeLogger("custos.approve")
      guard let auto else {
        try await target.approveOne(requestID!, requireBot: true, logger: logger)
        return
      }
      let rule = try approverCall { () throws(ApproverError) in try AutoApprovalRule.load(auto) }
      let apiKey = try readAPIKey()
      let approver = try target.approver(apiKey: apiKey, logger: logger)
      guard approver.key.isBot else {
        throw CommandFailure("--auto approves with bot keys only; a passkey belongs to a person")
      }
      let stop = StopFlag()
      let signals = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number)
        source.setEventHandler { stop.set() }
        source.resume()
        return source
      }
      print(
        "approving as '\(approver.approverID)' for wallets \(rule.wallets.map(String.init).joined(separator: ", "))"
          + (once ? " (one round)" : ", polling every \(interval) s until SIGTERM"))
      fflush(nil)
      let total = await approver.autoLoop(
        rule: rule, interval: .milliseconds(Int(interval * 1000)), once: once, stop: stop)
      signals.forEach { $0.cancel() }
      print("stopped: \(total.approved.count) approved, \(total.refused.count) refused")
    }

    private func readAPIKey() throws -> String {
      if let apiKeyFile {
        guard let text = try? String(contentsOfFile: apiKeyFile, encoding: .utf8) else {
          throw CommandFailure("cannot read the API key file \(apiKeyFile)")
        }
        let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !key.isEmpty else { throw CommandFailure("the API key file \(apiKeyFile) is empty") }
        return key
      }
      guard let key = ProcessInfo.processInfo.environment["CUSTOS_API_KEY"], !key.isEmpty else {
        throw CommandFailure(
          "--auto lists requests with an API key (scope requests:read): give --api-key-file or set CUSTOS_API_KEY")
      }
      return key
    }
  }

  struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Make a bot's key file (0600) and print its public key for enrolment.",
      discussion: """
        The file is JSON (format custos-approver-key, version 1: kind bot, algorithm, the 32-byte \
        private key in hex, the public key in base64url, and the approver id if given). It is \
        created 0600 and never overwritten. The last line printed is the approver as a wallet \
        proposal takes it (openapi.yaml ApproverInput).
        """)

    @Option(help: "p256 or ed25519.")
    var algorithm: String = "p256"

    @Option(help: "The key file to write (refused if it exists).")
    var out: String

    @Option(help: "The approver id the wallet enrols this key under (stored in the file).")
    var id: String?

    func run() async throws {
      guard let chosen = BotKey.Algorithm(rawValue: algorithm) else {
        throw ValidationError("--algorithm is p256 or ed25519, not \(algorithm)")
      }
      let key = try approverCall { () throws(ApproverError) in
        try ApproverKey.createBot(chosen, approverID: id, at: out)
      }
      guard case .bot(let bot, _) = key.signer else { return }
      print("wrote \(out) (0600): bot key \(chosen.rawValue)")
      print("public key: \(Base64URL.encode(bot.botKey.publicKey))")
      print("enrol as: \(key.enrolmentJSON(id: id ?? "bot"))")
    }
  }
}

/// The server, key and approver id of an approval.
struct ApprovalTargetOptions: ParsableArguments {
  @Option(help: "The custody server's URL (http://127.0.0.1:8080).")
  var server: String

  @Option(help: "The approver's key file (custos approve keygen, custos passkey create).")
  var key: String

  @Option(name: .customLong("as"), help: "The approver id to approve as (default: the key file's approverId).")
  var approverID: String?

  @Option(help: "Refuse unless the request is for this wallet.")
  var wallet: UInt64?

  @Flag(name: .customLong("check-only"), help: "Fetch, check and show the request; sign nothing.")
  var checkOnly = false

  func approver(apiKey: String? = nil, logger: Logger) throws -> BotApprover {
    let loaded = try approverCall { () throws(ApproverError) in try ApproverKey.load(key) }
    guard let id = approverID ?? loaded.approverID else {
      throw CommandFailure("the key file names no approver id: give --as ID")
    }
    let client = try approverCall { () throws(ApproverError) in try CustodyServerClient(url: server, apiKey: apiKey) }
    return BotApprover(
      client: client, key: loaded, approverID: id, logger: logger,
      say: { text in
        print(text)
        fflush(nil)
      })
  }

  /// Fetches, checks, shows, signs and posts one approval; fails (exit 1) when any check does.
  func approveOne(_ requestID: String, requireBot: Bool?, logger: Logger) async throws {
    let approver = try approver(logger: logger)
    if let requireBot, requireBot != approver.key.isBot {
      throw CommandFailure(
        requireBot ? "\(key) is a passkey: use custos passkey approve" : "\(key) is a bot key: use custos approve")
    }
    let checked: CheckedRequest
    do {
      checked = try await approver.check(requestID, expectedWallet: wallet)
    } catch {
      throw CommandFailure("refused \(requestID): \(error.message)")
    }
    print("request \(requestID), decoded and checked here (canonical, \(checked.encoding.count) bytes):")
    print(approver.indent(checked.rendering))
    if checkOnly {
      print("checked only: nothing signed")
      return
    }
    let receipt = try await approverCallAsync { () async throws(ApproverError) in
      try await approver.approve(checked)
    }
    print("approved as '\(approver.approverID)': \(approver.describe(receipt))")
    if let transaction = receipt.signedTransaction { print("signed transaction: \(transaction)") }
    if let signature = receipt.signature { print("signature: \(signature)") }
  }
}

/// Runs an approver call, turning its error into the CLI's one-line failure.
func approverCallAsync<T>(_ body: () async throws(ApproverError) -> T) async throws -> T {
  do {
    return try await body()
  } catch {
    throw CommandFailure(error.message)
  }
}

/// The synchronous form of `approverCall`.
func approverCall<T>(_ body: () throws(ApproverError) -> T) throws -> T {
  do {
    return try body()
  } catch {
    throw CommandFailure(error.message)
  }
}
