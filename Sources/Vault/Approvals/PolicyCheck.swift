import Custody

/// The policy step of a signing request, after the approvals and the envelope checks and
/// before anything is unsealed. The amount and destination judged are those of the
/// transaction the vault itself marshals and signs.
///
/// - Time of day: every signing request (transactions and messages) must fall in the window,
///   by the vault's clock, in UTC.
/// - Per-transaction limit: the transaction's `value` (wei) at most the limit.
/// - Rolling window: `value` plus every spend recorded less than `seconds` ago at most the limit.
/// - Destination allowlist: when not empty, the transaction's `to` must be one of its entries
///   that is an Ethereum address (compared as 20 bytes, whatever the letter case); entries of
///   other chains never match an Ethereum destination.
///
/// Fees (gas) are not counted against the limits, and call data is not decoded (an ERC-20
/// transfer's token amount is not judged); the allowlist applies to the called account.
enum PolicyCheck {
  /// What a transaction moves, as the policy judges it.
  struct Spend {
    var value: Amount
    var destination: [UInt8]
  }

  /// Checks `spend` (nil for a message) at `now` (Unix seconds) against `policy` and returns
  /// the policy state to record: with a rolling window, spends older than the window dropped
  /// and this one (when not zero) added at `now`.
  static func check(
    _ policy: Policy, state: PolicyState, spend: Spend?, now: UInt64
  ) throws(RequestError) -> PolicyState {
    if let window = policy.timeOfDay {
      let minute = UInt16((now % 86_400) / 60)
      guard window.contains(minute: minute) else {
        throw RequestError(
          .outsideTimeWindow,
          "signing is allowed from \(TimeOfDayWindow.clockText(window.fromMinute)) to \(TimeOfDayWindow.clockText(window.toMinute)) UTC; it is \(TimeOfDayWindow.clockText(minute)) UTC"
        )
      }
    }
    guard let spend else { return state }
    if let limit = policy.perTransactionLimit, spend.value > limit {
      throw RequestError(
        .perTransactionLimitExceeded,
        "the transaction moves \(spend.value) wei; one transaction may move at most \(limit)")
    }
    if !policy.destinationAllowlist.isEmpty {
      let allowed = policy.destinationAllowlist.contains { EthereumAddress.parse($0) == spend.destination }
      guard allowed else {
        throw RequestError(
          .destinationNotAllowed,
          "\(EthereumAddress.checksummed(spend.destination)) is not on the wallet's destination allowlist")
      }
    }
    guard let window = policy.rollingWindow else { return state }
    let recent = state.spent.filter { now < $0.timestamp || now - $0.timestamp < window.seconds }
    var total = spend.value
    for earlier in recent {
      guard let sum = total.adding(earlier.amount) else {
        throw RequestError(.rollingLimitExceeded, "the window's spends overflow 256 bits")
      }
      total = sum
    }
    guard total <= window.limit else {
      throw RequestError(
        .rollingLimitExceeded,
        "\(total) wei within \(window.seconds) seconds (this transaction included) exceeds the window's limit of \(window.limit)"
      )
    }
    var next = PolicyState(spent: recent)
    if spend.value != .zero {
      // A clock that went back must not unorder the record: the later time is kept, which
      // keeps the spend in the window longer (stricter, never looser).
      next.spent.append(.init(timestamp: max(now, recent.last?.timestamp ?? 0), amount: spend.value))
    }
    while next.spent.count > PolicyState.maxSpends {
      // Merge the two oldest at the later time: still counted, and for longer.
      let merged = PolicyState.Spend(
        timestamp: next.spent[1].timestamp, amount: next.spent[0].amount.adding(next.spent[1].amount) ?? .max)
      next.spent.replaceSubrange(0...1, with: [merged])
    }
    return next
  }

}
