import Custody
import Foundation

/// One line of a lockdown audit: what was checked, what was expected, what the token (or the
/// file system) actually did, and whether that meets the expectation.
public struct LockdownCheck: Codable, Hashable, Sendable {
  /// Which layer of the boundary a check belongs to.
  public enum Layer: String, Codable, Hashable, Sendable {
    /// Attributes of objects against the policy table, and each partition's allow-list.
    case policy
    /// An attack of the catalogue, run for real.
    case attack
    /// Permissions and plaintext on disk.
    case fileSystem = "file-system"
  }

  /// Whether what was observed meets what was expected.
  public enum Verdict: String, Codable, Hashable, Sendable {
    case pass, fail
  }

  /// The layer the check belongs to.
  public var layer: Layer
  /// The attack's id, `policy`, `allow-list`, or `fs.*`.
  public var check: String
  /// The partition, for checks of one.
  public var partition: String?
  /// The object (`custos.master (CKO_SECRET_KEY)`), the partition, or the path checked.
  public var subject: String
  /// The mechanism or attribute of this variant of the attack, if it has variants.
  public var variant: String?
  /// What must happen, in words (`refused with CKR_ACTION_PROHIBITED`).
  public var expected: String
  /// What the token or the file system did, in words, with the call that decided it.
  public var observed: String
  /// The `CKR_` code the decisive call returned, when it returned one.
  public var code: String?
  /// Pass when `observed` meets `expected`.
  public var verdict: Verdict
  /// Whether it ran against the snapshot copy instead of the audited device.
  public var onSnapshot: Bool
  /// What holds instead where the token does not block an attack, or the policy exception's
  /// reason where the table grants a usage.
  public var note: String?

  /// `check partition/subject [variant]`, as failures are named.
  public var name: String {
    "\(check) \(partition.map { "\($0)/" } ?? "")\(subject)\(variant.map { " [\($0)]" } ?? "")"
  }
}

/// What a lockdown audit found: every check, whether all passed, and what did not apply.
public struct LockdownReport: Codable, Sendable {
  /// The device's name.
  public var device: String
  /// The device's serial.
  public var serial: String
  /// The device directory audited.
  public var directory: String
  /// How destructive attacks were kept off the audited device.
  public var snapshot: String
  /// The ids of the attacks run, in order.
  public var attacks: [String]
  /// Attacks that found nothing to run against on a partition, with why.
  public var notApplicable: [String]
  /// Every check, in the order run.
  public var checks: [LockdownCheck]
  /// Whether every check met its expectation.
  public var passed: Bool

  /// A report of `checks`; `passed` follows from them.
  public init(
    device: String, serial: String, directory: String, snapshot: String, attacks: [String],
    notApplicable: [String], checks: [LockdownCheck]
  ) {
    self.device = device
    self.serial = serial
    self.directory = directory
    self.snapshot = snapshot
    self.attacks = attacks
    self.notApplicable = notApplicable
    self.checks = checks
    self.passed = checks.allSatisfy { $0.verdict == .pass }
  }

  /// The checks that failed.
  public var failures: [LockdownCheck] { checks.filter { $0.verdict == .fail } }

  /// The report as a table (verdict, check, subject, expected, observed) and a summary.
  public var text: String {
    var lines = [
      "Lockdown audit of device \(device) (serial \(serial)) at \(directory)",
      "  \(snapshot)",
      "",
    ]
    let header = ["VERDICT", "CHECK", "SUBJECT", "EXPECTED", "OBSERVED"]
    let rows = checks.map { check -> [String] in
      [
        check.verdict == .pass ? "pass" : "FAIL", check.check,
        "\(check.partition.map { "\($0)/" } ?? "")\(check.subject)\(check.variant.map { " [\($0)]" } ?? "")"
          + (check.onSnapshot ? " (snapshot)" : ""),
        check.expected, check.observed,
      ]
    }
    let widths = (0..<3).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    for row in [header] + rows {
      let padded = (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
      lines.append((padded + [row[3], "| " + row[4]]).joined(separator: "  "))
    }
    let notBlocked = checks.filter { $0.verdict == .pass && $0.note != nil && $0.layer == .attack }
    if !notBlocked.isEmpty {
      lines.append("")
      lines.append("Permitted by the token, and what holds instead:")
      var seen = Set<String>()
      for check in notBlocked where seen.insert("\(check.check)|\(check.note!)").inserted {
        lines.append("  \(check.check): \(check.note!)")
      }
    }
    if !notApplicable.isEmpty {
      lines.append("")
      lines.append("Not applicable:")
      lines += notApplicable.map { "  \($0)" }
    }
    lines.append("")
    let failed = failures
    lines.append(
      "\(checks.count) checks: \(checks.count - failed.count) passed, \(failed.count) failed"
        + (failed.isEmpty ? "; every expectation holds" : ""))
    for check in failed { lines.append("  FAILED \(check.name): \(check.observed)") }
    return lines.joined(separator: "\n")
  }

  /// The report as pretty-printed JSON.
  public func json() throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(self), as: UTF8.self)
  }
}
