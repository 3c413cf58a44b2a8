import Custody
import Foundation
import OpenAPIRuntime

/// The API's dates as RFC 3339 text (`2026-11-22T01:02:03Z`), written and read without
/// Foundation's `ISO8601DateFormatter`: on Linux that formatter goes through ICU and a lock, and
/// reading the dates of a response cost more than the rest of its JSON. Dates are written in UTC
/// to the second (the output of OpenAPIRuntime's default transcoder); any RFC 3339 date-time is
/// read: `T` or `t`, fractional seconds, `Z`, `z` or a numeric offset.
public struct RFC3339DateTranscoder: DateTranscoder {
  public init() {}

  public func encode(_ date: Date) throws -> String {
    let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
    let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
    let secondOfDay = Int(seconds - days * 86_400)
    let date = CivilDate(daysSince1970: days)
    guard (0...9999).contains(date.year) else {
      throw RFC3339DateError("the date \(date) is outside years 0000 to 9999")
    }
    var text = [UInt8]()
    text.reserveCapacity(20)
    func append(_ value: Int, digits: Int) {
      var divisor = 1
      for _ in 1..<digits { divisor *= 10 }
      var rest = value
      while divisor > 0 {
        text.append(UInt8(ascii: "0") + UInt8(rest / divisor))
        rest %= divisor
        divisor /= 10
      }
    }
    append(Int(date.year), digits: 4)
    text.append(UInt8(ascii: "-"))
    append(date.month, digits: 2)
    text.append(UInt8(ascii: "-"))
    append(date.day, digits: 2)
    text.append(UInt8(ascii: "T"))
    append(secondOfDay / 3600, digits: 2)
    text.append(UInt8(ascii: ":"))
    append(secondOfDay / 60 % 60, digits: 2)
    text.append(UInt8(ascii: ":"))
    append(secondOfDay % 60, digits: 2)
    text.append(UInt8(ascii: "Z"))
    return String(decoding: text, as: UTF8.self)
  }

  public func decode(_ text: String) throws -> Date {
    var bytes = Array(text.utf8)[...]
    func refuse(_ why: String) -> RFC3339DateError {
      RFC3339DateError("'\(text.prefix(40))' is not an RFC 3339 date-time: \(why)")
    }
    func number(_ digits: Int, _ what: String) throws -> Int {
      guard bytes.count >= digits else { throw refuse("the \(what) is missing") }
      var value = 0
      for byte in bytes.prefix(digits) {
        guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else {
          throw refuse("the \(what) is not \(digits) digits")
        }
        value = value * 10 + Int(byte - UInt8(ascii: "0"))
      }
      bytes = bytes.dropFirst(digits)
      return value
    }
    func separator(_ expected: [UInt8], _ what: String) throws {
      guard let byte = bytes.first, expected.contains(byte) else { throw refuse("\(what) expected") }
      bytes = bytes.dropFirst()
    }
    let year = try number(4, "year")
    try separator([UInt8(ascii: "-")], "'-' after the year")
    let month = try number(2, "month")
    try separator([UInt8(ascii: "-")], "'-' after the month")
    let day = try number(2, "day")
    try separator([UInt8(ascii: "T"), UInt8(ascii: "t")], "'T' between date and time")
    let hour = try number(2, "hour")
    try separator([UInt8(ascii: ":")], "':' after the hour")
    let minute = try number(2, "minute")
    try separator([UInt8(ascii: ":")], "':' after the minutes")
    let second = try number(2, "second")
    guard (1...12).contains(month) else { throw refuse("month \(month) is not 01 to 12") }
    guard (1...CivilDate.days(inMonth: month, of: Int64(year))).contains(day) else {
      throw refuse("day \(day) is not in month \(month) of \(year)")
    }
    guard hour < 24, minute < 60, second < 60 else { throw refuse("the time is not 00:00:00 to 23:59:59") }
    var fraction = 0.0
    if bytes.first == UInt8(ascii: ".") {
      bytes = bytes.dropFirst()
      var scale = 0.1
      var digits = 0
      while let byte = bytes.first, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
        fraction += Double(byte - UInt8(ascii: "0")) * scale
        scale /= 10
        digits += 1
        bytes = bytes.dropFirst()
      }
      guard digits > 0 else { throw refuse("no digits after the decimal point") }
    }
    var offset = 0
    switch bytes.first {
    case UInt8(ascii: "Z"), UInt8(ascii: "z"):
      bytes = bytes.dropFirst()
    case UInt8(ascii: "+"), UInt8(ascii: "-"):
      let sign = bytes.first == UInt8(ascii: "-") ? -1 : 1
      bytes = bytes.dropFirst()
      let offsetHours = try number(2, "offset's hours")
      try separator([UInt8(ascii: ":")], "':' in the offset")
      let offsetMinutes = try number(2, "offset's minutes")
      guard offsetHours < 24, offsetMinutes < 60 else { throw refuse("the offset is not -23:59 to +23:59") }
      offset = sign * (offsetHours * 3600 + offsetMinutes * 60)
    default:
      throw refuse("the time zone ('Z' or an offset such as +02:00) is missing")
    }
    guard bytes.isEmpty else { throw refuse("unexpected text after the time zone") }
    let days = CivilDate(year: Int64(year), month: month, day: day).daysSince1970
    let seconds = days * 86_400 + Int64(hour * 3600 + minute * 60 + second - offset)
    return Date(timeIntervalSince1970: Double(seconds) + fraction)
  }
}

/// A date the API could not read or write, with the text and what was wrong with it.
public struct RFC3339DateError: Error, CustomStringConvertible, Sendable {
  public let description: String
  init(_ description: String) { self.description = description }
}

extension Configuration {
  /// The configuration Custos's server and clients share: RFC 3339 dates through
  /// `RFC3339DateTranscoder`, JSON with sorted keys (stable bodies, as before) and no
  /// indentation (a machine reads them; `jq` prints them for people).
  public static var custos: Configuration {
    Configuration(dateTranscoder: RFC3339DateTranscoder(), jsonEncodingOptions: [.sortedKeys])
  }
}
