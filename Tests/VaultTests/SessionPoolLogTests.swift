import Testing

@testable import Vault

/// The renewal's duration in the log counts whole seconds too (it used to report only the
/// fraction: a 1.5 s renewal read as 500 ms).
@Suite struct SessionPoolLogTests {
  @Test func millisecondsIncludeWholeSeconds() {
    #expect(SessionPool.milliseconds(.milliseconds(1500)) == 1500)
    #expect(SessionPool.milliseconds(.seconds(3)) == 3000)
    #expect(SessionPool.milliseconds(.microseconds(999)) == 0)
  }
}
