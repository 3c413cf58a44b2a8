import CustosAPI
import Foundation
import Testing

/// The API's own date transcoder against Foundation's ISO 8601 formatter (the reference it
/// replaces): the same text out, the same instants in, and clear refusals of what is not RFC 3339.
@Suite struct RFC3339DateTests {
  let transcoder = RFC3339DateTranscoder()

  /// Foundation's formatter as OpenAPIRuntime's default transcoder configures it.
  static func reference() -> ISO8601DateFormatter {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter
  }

  /// Instants spread over years 1900 to 9999 (Foundation's formatter is the reference there;
  /// earlier dates depend on its calendar's Julian cut-over): leap days, month ends, before and
  /// after 1970, a day's edges, and fractions that must be dropped (not rounded up).
  static func instants() -> [Date] {
    var seconds: [Double] = [
      0, -1, 86_399, 86_400, -86_400, 951_782_400, 951_868_799, 4_107_542_400, -2_203_891_200,
      1_795_000_000.999, -0.5, 253_402_300_799, -2_208_988_800,
    ]
    // A linear congruential walk: the same instants every run.
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for _ in 0..<5000 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let span = 253_402_300_799.0 + 2_208_988_800.0
      seconds.append((Double(state >> 11) / Double(1 << 53) * span - 2_208_988_800).rounded(.down))
    }
    return seconds.map { Date(timeIntervalSince1970: $0) }
  }

  @Test func writesWhatFoundationWrites() throws {
    let reference = Self.reference()
    for date in Self.instants() {
      let whole = Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
      #expect(try transcoder.encode(date) == reference.string(from: whole), "\(date.timeIntervalSince1970)")
    }
  }

  @Test func readsWhatFoundationWrites() throws {
    let reference = Self.reference()
    for date in Self.instants() {
      let text = reference.string(from: date)
      #expect(try transcoder.decode(text) == reference.date(from: text), "\(text)")
    }
  }

  @Test func readsOffsetsFractionsAndLowercase() throws {
    let instant = try transcoder.decode("2026-11-22T01:04:05Z")
    #expect(instant == Date(timeIntervalSince1970: 1_795_309_445))
    #expect(try transcoder.decode("2026-11-22T03:04:05+02:00") == instant)
    #expect(try transcoder.decode("2026-11-21T20:34:05-04:30") == instant)
    #expect(try transcoder.decode("2026-11-22t01:04:05z") == instant)
    let fraction = try transcoder.decode("2026-11-22T01:04:05.250Z").timeIntervalSince1970
    #expect(abs(fraction - 1_795_309_445.25) < 1e-6)
    #expect(try transcoder.decode("2024-02-29T00:00:00Z") == Date(timeIntervalSince1970: 1_709_164_800))
  }

  @Test(arguments: [
    ("", "year is missing"),
    ("2026-13-01T00:00:00Z", "month 13"),
    ("2026-02-29T00:00:00Z", "day 29 is not in month 2"),
    ("2100-02-29T00:00:00Z", "day 29 is not in month 2"),
    ("2026-04-31T00:00:00Z", "day 31"),
    ("2026-11-22T24:00:00Z", "the time is not"),
    ("2026-11-22T23:60:00Z", "the time is not"),
    ("2026-11-22 01:04:05Z", "'T' between date and time"),
    ("2026-11-22T01:04:05", "time zone"),
    ("2026-11-22T01:04:05.Z", "no digits after the decimal point"),
    ("2026-11-22T01:04:05+0200", "':' in the offset"),
    ("2026-11-22T01:04:05Zjunk", "unexpected text"),
    ("26-11-22T01:04:05Z", "year is not 4 digits"),
    ("2026-1x-22T01:04:05Z", "month is not 2 digits"),
  ])
  func refusesWhatIsNotRFC3339(text: String, reason: String) {
    #expect {
      _ = try transcoder.decode(text)
    } throws: { error in
      let description = "\(error)"
      return description.contains(reason) && description.contains("is not an RFC 3339 date-time")
    }
  }

  @Test func roundTripsTheFirstAndLastDaysItWrites() throws {
    for seconds: Double in [-62_135_596_800, -62_135_510_401, 253_402_300_799] {
      let date = Date(timeIntervalSince1970: seconds)
      #expect(try transcoder.decode(transcoder.encode(date)) == date)
    }
    #expect(try transcoder.encode(Date(timeIntervalSince1970: -62_135_596_800)) == "0001-01-01T00:00:00Z")
    #expect(try transcoder.encode(Date(timeIntervalSince1970: 253_402_300_799)) == "9999-12-31T23:59:59Z")
  }

  @Test func refusesYearsItCannotWrite() {
    #expect(throws: RFC3339DateError.self) {
      _ = try transcoder.encode(Date(timeIntervalSince1970: 253_402_300_800))
    }
  }
}
