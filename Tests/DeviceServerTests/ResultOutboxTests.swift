import Custody
import Testing
import VaultWire

@testable import DeviceServer

/// The device's outbox of recent results (for a server that lost an answer) is bounded in
/// count and in bytes, oldest out first: the device holds a root, not the wallets.
@Suite struct ResultOutboxTests {
  static func outcome(_ index: Int, walletBytes: Int) -> VaultOutcome {
    VaultOutcome(
      walletData: [UInt8](repeating: UInt8(index & 0xFF), count: walletBytes),
      sealedSeed: [UInt8](repeating: 1, count: 60), result: [], change: nil)
  }

  static func hash(_ index: Int) -> Hash256 { Hash256.sha256(Array("envelope \(index)".utf8)) }

  @Test func keepsTheMostRecentWithinItsByteLimit() {
    let each = ResultOutbox.cost(Self.outcome(0, walletBytes: 700))
    let outbox = ResultOutbox(capacity: 65_536, byteLimit: 100 * each)
    for index in 0..<1_000 { outbox.keep(Self.outcome(index, walletBytes: 700), envelopeHash: Self.hash(index)) }
    #expect(outbox.kept.count == 100 && outbox.kept.bytes == 100 * each)
    #expect(outbox.result(Self.hash(899)) == nil)
    #expect(outbox.result(Self.hash(900)) == Self.outcome(900, walletBytes: 700))
    #expect(outbox.result(Self.hash(999)) == Self.outcome(999, walletBytes: 700))
  }

  @Test func keepsTheMostRecentWithinItsCount() {
    let outbox = ResultOutbox(capacity: 10, byteLimit: 1 << 30)
    for index in 0..<25 { outbox.keep(Self.outcome(index, walletBytes: 10), envelopeHash: Self.hash(index)) }
    #expect(outbox.kept.count == 10)
    #expect(outbox.result(Self.hash(14)) == nil && outbox.result(Self.hash(15)) != nil)
    // The same envelope again replaces its result without counting twice.
    outbox.keep(Self.outcome(99, walletBytes: 10), envelopeHash: Self.hash(24))
    #expect(outbox.kept.count == 10 && outbox.result(Self.hash(24)) == Self.outcome(99, walletBytes: 10))
  }

  /// One result larger than the limit is still kept (the latest answer is never dropped).
  @Test func theLatestIsKeptEvenWhenLargerThanTheLimit() {
    let outbox = ResultOutbox(capacity: 10, byteLimit: 100)
    outbox.keep(Self.outcome(1, walletBytes: 500), envelopeHash: Self.hash(1))
    outbox.keep(Self.outcome(2, walletBytes: 500), envelopeHash: Self.hash(2))
    #expect(outbox.kept.count == 1 && outbox.result(Self.hash(2)) != nil)
  }
}
