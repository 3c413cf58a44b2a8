import Custody
import Testing

@testable import Vault

/// The policy step on its own, at chosen times (the clock is an argument here).
@Suite struct PolicyCheckTests {
  let allowed = EthereumAddress.parse("0x52908400098527886E0F7030069857D2E4169EE7")!
  let elsewhere = [UInt8](repeating: 0x22, count: 20)

  var policy: Policy {
    Policy(
      perTransactionLimit: Amount(1_000), rollingWindow: RollingLimit(seconds: 3_600, limit: Amount(2_500)),
      destinationAllowlist: [
        "0x52908400098527886e0f7030069857d2e4169ee7", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
      ],
      timeOfDay: TimeOfDayWindow(fromMinute: 8 * 60, toMinute: 20 * 60))
  }

  func spend(_ value: UInt64, to destination: [UInt8]? = nil) -> PolicyCheck.Spend {
    PolicyCheck.Spend(value: Amount(value), destination: destination ?? allowed)
  }

  @Test func eachLimit() throws {
    let state = PolicyState()
    // Within every limit: the spend is recorded at the vault's time.
    let next = try PolicyCheck.check(policy, state: state, spend: spend(1_000), now: noon)
    #expect(next.spent == [.init(timestamp: noon, amount: Amount(1_000))])
    #expect(
      refusal { _ = try PolicyCheck.check(policy, state: state, spend: spend(1_001), now: noon) }
        == .perTransactionLimitExceeded)
    #expect(
      refusal { _ = try PolicyCheck.check(policy, state: state, spend: spend(5, to: elsewhere), now: noon) }
        == .destinationNotAllowed)
    // 07:59 and 20:00 are outside [08:00, 20:00); messages (no spend) are judged by time too.
    #expect(
      refusal { _ = try PolicyCheck.check(policy, state: state, spend: nil, now: noon - 4 * 3600 - 60) }
        == .outsideTimeWindow)
    #expect(
      refusal { _ = try PolicyCheck.check(policy, state: state, spend: spend(5), now: noon + 8 * 3600) }
        == .outsideTimeWindow)
    #expect(try PolicyCheck.check(policy, state: state, spend: nil, now: noon - 4 * 3600) == state)
  }

  @Test func rollingWindow() throws {
    var state = PolicyState()
    state = try PolicyCheck.check(policy, state: state, spend: spend(1_000), now: noon)
    state = try PolicyCheck.check(policy, state: state, spend: spend(1_000), now: noon + 600)
    // 2,000 spent in the last hour: 501 more is over the 2,500 limit, 500 is not.
    #expect(
      refusal { _ = try PolicyCheck.check(policy, state: state, spend: spend(501), now: noon + 1_200) }
        == .rollingLimitExceeded)
    let full = try PolicyCheck.check(policy, state: state, spend: spend(500), now: noon + 1_200)
    #expect(full.spent.count == 3)
    // An hour after the first spend it leaves the window (and the record).
    let later = try PolicyCheck.check(policy, state: full, spend: spend(1_000), now: noon + 3_600)
    #expect(later.spent.map(\.timestamp) == [noon + 600, noon + 1_200, noon + 3_600])
    // A zero-value transaction (a call) is judged but not recorded.
    #expect(try PolicyCheck.check(policy, state: later, spend: spend(0), now: noon + 3_601).spent.count == 3)
  }

  /// A clock that went back keeps the record in time order, and a full record merges its two
  /// oldest spends instead of forgetting one.
  @Test func clockGoingBackAndFullRecord() throws {
    var state = try PolicyCheck.check(policy, state: PolicyState(), spend: spend(10), now: noon + 100)
    state = try PolicyCheck.check(policy, state: state, spend: spend(10), now: noon + 50)
    #expect(state.spent.map(\.timestamp) == [noon + 100, noon + 100])
    var loose = policy
    loose.rollingWindow = RollingLimit(seconds: 86_400, limit: Amount.max)
    loose.perTransactionLimit = nil
    var full = PolicyState(
      spent: (0..<PolicyState.maxSpends).map { .init(timestamp: noon + UInt64($0), amount: Amount(1)) })
    full = try PolicyCheck.check(loose, state: full, spend: spend(7), now: noon + 5_000)
    #expect(full.spent.count == PolicyState.maxSpends)
    #expect(full.spent[0] == .init(timestamp: noon + 1, amount: Amount(2)))
    #expect(full.spent.last == .init(timestamp: noon + 5_000, amount: Amount(7)))
    try WalletData(
      id: 1, threshold: 1, custodial: true,
      approvers: [Approver(id: "a", credential: .bot(SoftwareBot(.ed25519).botKey))],
      curve: .secp256k1, derivation: .bip32, policyState: full
    ).validate()
  }

  @Test func noPolicyAllowsEverything() throws {
    #expect(
      try PolicyCheck.check(Policy(), state: PolicyState(), spend: spend(UInt64.max, to: elsewhere), now: 3)
        == PolicyState())
  }
}
