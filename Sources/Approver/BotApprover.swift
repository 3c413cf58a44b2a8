import Custody
import Foundation
import Logging
import Synchronization

/// The approver's work: fetch a request's envelope from the server, check it (`CheckedRequest`),
/// show it with the one Custody renderer, sign it with this key, post the approval. `--auto`
/// repeats that for the pending requests of the rule's wallets, approving only what the rule
/// allows on the envelope it decoded itself.
public struct BotApprover: Sendable {
  public let client: CustodyServerClient
  public let key: ApproverKey
  public let approverID: String
  let logger: Logger
  /// Where the tool's report goes (standard output in the CLI).
  let say: @Sendable (String) -> Void

  public init(
    client: CustodyServerClient, key: ApproverKey, approverID: String, logger: Logger,
    say: @escaping @Sendable (String) -> Void
  ) {
    self.client = client
    self.key = key
    self.approverID = approverID
    self.logger = logger
    self.say = say
  }

  /// Fetches and checks `requestID` (nothing is signed).
  public func check(_ requestID: String, expectedWallet: UInt64? = nil) async throws(ApproverError) -> CheckedRequest {
    let served = try await client.servedRequest(requestID)
    return try CheckedRequest.check(
      served, requestID: requestID, approverID: approverID, key: key, expectedWallet: expectedWallet)
  }

  /// Signs a checked request and posts the approval; the server's receipt.
  public func approve(_ checked: CheckedRequest) async throws(ApproverError) -> CustodyServerClient.Receipt {
    let approval = try key.approve(checked.encoding, as: approverID)
    let receipt = try await client.submit(approval, to: checked.requestID)
    logger.info(
      "approval posted",
      metadata: [
        "request.id": "\(checked.requestID)", "wallet.id": "\(checked.envelope.walletID)",
        "approver.id": "\(approverID)", "request.status": "\(receipt.status)",
      ])
    return receipt
  }

  /// What one round of `--auto` did.
  public struct Round: Sendable, Hashable {
    public var approved: [String] = []
    public var refused: [String] = []
  }

  /// One polling round: every request of the rule's wallets that awaits this approver and was
  /// not judged before (`judged` remembers them) is fetched, checked and judged by the rule.
  public func autoRound(rule: AutoApprovalRule, judged: inout Set<String>) async -> Round {
    var round = Round()
    for walletID in rule.wallets {
      let listed: [CustodyServerClient.Listed]
      do {
        listed = try await client.requests(ofWallet: walletID)
      } catch {
        logger.warning("cannot list requests", metadata: ["wallet.id": "\(walletID)", "error": "\(error)"])
        continue
      }
      for request in listed.reversed()
      where request.status == "awaiting-approvals" && request.awaiting.contains(approverID)
        && !judged.contains(request.id)
      {
        judged.insert(request.id)
        do {
          let checked = try await check(request.id, expectedWallet: walletID)
          let reasons = rule.refusals(of: checked.envelope)
          guard reasons.isEmpty else {
            round.refused.append(request.id)
            say("refused \(request.id) (wallet \(walletID)): \(reasons.joined(separator: "; "))")
            logger.notice(
              "request refused by the rule",
              metadata: ["request.id": "\(request.id)", "wallet.id": "\(walletID)", "reasons": "\(reasons)"])
            continue
          }
          say("approving \(request.id) (wallet \(walletID)):\n" + indent(checked.rendering))
          let receipt = try await approve(checked)
          round.approved.append(request.id)
          say("approved \(request.id): \(describe(receipt))")
        } catch {
          round.refused.append(request.id)
          say("refused \(request.id) (wallet \(walletID)): \(error.message)")
          logger.notice(
            "request refused", metadata: ["request.id": "\(request.id)", "error": "\(error)"])
        }
      }
    }
    return round
  }

  /// Polls every `interval` until `stop` is set (SIGTERM or SIGINT in the CLI), or once;
  /// the totals.
  public func autoLoop(
    rule: AutoApprovalRule, interval: Duration, once: Bool, stop: StopFlag
  ) async -> Round {
    var judged = Set<String>()
    var total = Round()
    while !stop.isSet {
      let round = await autoRound(rule: rule, judged: &judged)
      total.approved += round.approved
      total.refused += round.refused
      if once { break }
      await stop.sleep(interval)
    }
    return total
  }

  /// `completed (2 of 2 approvals)`, with a failure's reason.
  public func describe(_ receipt: CustodyServerClient.Receipt) -> String {
    "request \(receipt.status), \(receipt.approvals) of \(receipt.threshold) approvals"
      + (receipt.failure.map { "; \($0)" } ?? "")
  }

  /// `text` with every line indented by four spaces (how the tools show a rendering).
  public func indent(_ text: String) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n")
  }
}

/// Set once (by SIGTERM or SIGINT in the CLI) to stop `autoLoop` after the round under way.
public final class StopFlag: Sendable {
  private let state = Mutex(false)

  public init() {}

  public var isSet: Bool { state.withLock { $0 } }

  public func set() { state.withLock { $0 = true } }

  /// Sleeps `duration`, waking every 50 ms to stop early once the flag is set.
  func sleep(_ duration: Duration) async {
    let clock = ContinuousClock()
    let end = clock.now.advanced(by: duration)
    while !isSet, clock.now < end {
      try? await Task.sleep(for: min(.milliseconds(50), clock.now.duration(to: end)))
    }
  }
}
