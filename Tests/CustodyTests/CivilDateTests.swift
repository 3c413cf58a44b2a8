import Custody
import Foundation
import Testing

/// The day-count conversion against Foundation's Gregorian calendar in UTC (from 1900 on, where
/// it is proleptic Gregorian like ours), both ways, and known days on either side of 1970.
@Suite struct CivilDateTests {
  @Test func knownDays() {
    #expect(CivilDate(daysSince1970: 0) == CivilDate(year: 1970, month: 1, day: 1))
    #expect(CivilDate(daysSince1970: -1) == CivilDate(year: 1969, month: 12, day: 31))
    #expect(CivilDate(year: 2000, month: 3, day: 1).daysSince1970 == 11_017)
    #expect(CivilDate(year: 2024, month: 2, day: 29).daysSince1970 == 19_782)
    #expect(CivilDate(year: 1, month: 1, day: 1).daysSince1970 == -719_162)
    #expect(CivilDate.days(inMonth: 2, of: 2000) == 29)
    #expect(CivilDate.days(inMonth: 2, of: 1900) == 28)
    #expect(CivilDate.days(inMonth: 2, of: 2024) == 29)
    #expect(CivilDate.days(inMonth: 4, of: 2026) == 30)
  }

  @Test func agreesWithFoundationBothWays() {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    // Every 97th day from 1900-01-01 to past 2400.
    for days in stride(from: Int64(-25_567), through: 160_000, by: 97) {
      let date = CivilDate(daysSince1970: days)
      let parts = calendar.dateComponents(
        [.year, .month, .day], from: Date(timeIntervalSince1970: Double(days) * 86_400))
      #expect(Int(date.year) == parts.year && date.month == parts.month && date.day == parts.day, "day \(days)")
      #expect(date.daysSince1970 == days)
    }
  }
}
