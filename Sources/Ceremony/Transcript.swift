import Crypto
import Custody
import Foundation
import HSMBridge

/// A JSON value, for what a step records.
public enum JSONValue: Codable, Hashable, Sendable {
  case string(String)
  case int(Int)
  case bool(Bool)
  case array([JSONValue])
  case object([String: JSONValue])
  case null

  public init(from decoder: Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Int.self) {
      self = .int(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }

  public func encode(to encoder: Encoder) throws {
    var container = encoder.singleValueContainer()
    switch self {
    case .string(let value): try container.encode(value)
    case .int(let value): try container.encode(value)
    case .bool(let value): try container.encode(value)
    case .array(let value): try container.encode(value)
    case .object(let value): try container.encode(value)
    case .null: try container.encodeNil()
    }
  }

  /// The value as text, for the Markdown record.
  var text: String {
    switch self {
    case .string(let value): value
    case .int(let value): "\(value)"
    case .bool(let value): "\(value)"
    case .array(let values): values.map(\.text).joined(separator: ", ")
    case .object(let fields): fields.keys.sorted().map { "\($0): \(fields[$0]!.text)" }.joined(separator: "; ")
    case .null: "-"
    }
  }
}

/// An officer as the transcript records them at the start: what every signature is checked
/// against.
public struct TranscriptParticipant: Codable, Hashable, Sendable {
  public var name: String
  public var roles: [Role]
  /// X9.63 uncompressed P-256 public key, hex.
  public var publicKey: String
  public var keyID: String
  public var tokenSerial: String
}

/// One signature made by an officer's token.
public struct TranscriptSignature: Codable, Hashable, Sendable {
  public var officer: String
  public var keyID: String
  /// Raw r || s, hex.
  public var signature: String
  public var time: String
}

/// One line of a transcript. Which fields are present depends on `kind`.
public struct TranscriptEntry: Codable, Hashable, Sendable {
  public enum Kind: String, Codable, Sendable {
    /// The first line: the ceremony, its script, the device, the participants and their keys.
    case ceremonyStarted = "ceremony-started"
    /// A step's authorisation: its challenge and the quorum's signatures (or the unseal key
    /// holders who acted).
    case stepAuthorised = "step-authorised"
    /// An officer proving possession of their token at enrolment.
    case officerEnrolled = "officer-enrolled"
    /// What a step did.
    case stepCompleted = "step-completed"
    /// Every step done; sign-offs follow.
    case ceremonyCompleted = "ceremony-completed"
    /// An officer's token signing the chain head of the completed ceremony.
    case signOff = "sign-off"
  }

  /// 1-based line number.
  public var seq: Int
  /// The hash of the previous line (64 zeros for the first).
  public var prev: String
  public var time: String
  public var kind: Kind
  public var ceremony: String
  public var step: Int?
  public var title: String?
  public var role: Role?
  public var quorum: Int?
  public var action: String?
  /// The text each signature of the line is over.
  public var challenge: String?
  public var signatures: [TranscriptSignature]?
  public var holders: [String]?
  public var participants: [TranscriptParticipant]?
  /// The chain head a sign-off signs.
  public var head: String?
  public var records: [String: JSONValue]?
}

/// The challenges officers' tokens sign, each bound to the chain head before it.
public enum Challenge {
  static let prefix = "custos-ceremony/1"

  /// A step's challenge: the ceremony, the step number and action, and the chain head.
  public static func step(ceremony: String, step: Int, action: String, head: String) -> String {
    "\(prefix) \(ceremony) step \(step) \(action) after \(head)"
  }

  /// An officer's proof of possession at enrolment.
  public static func enrolment(ceremony: String, officer: String, keyID: String, head: String) -> String {
    "\(prefix) \(ceremony) enrol \(officer) \(keyID) after \(head)"
  }

  /// A sign-off of the completed ceremony's chain head.
  public static func signOff(ceremony: String, head: String) -> String {
    "\(prefix) \(ceremony) sign-off \(head)"
  }
}

/// Builds a transcript line by line: each line is the JSON of its entry with `"hash"` appended
/// last, the SHA-256 of the line's text before it; each entry carries the previous line's hash.
final class TranscriptWriter {
  static let genesis = String(repeating: "0", count: 64)
  let ceremony: String
  private(set) var lines: [String] = []
  private(set) var entries: [TranscriptEntry] = []
  private(set) var head = TranscriptWriter.genesis
  private let clock: () -> Date

  init(ceremony: String, clock: @escaping () -> Date) {
    self.ceremony = ceremony
    self.clock = clock
  }

  /// The current time, as lines record it.
  func now() -> String { Timestamp.format(clock()) }

  /// An entry of `kind` for the next line, with `seq`, `prev`, `time` and `ceremony` filled.
  func entry(_ kind: TranscriptEntry.Kind) -> TranscriptEntry {
    TranscriptEntry(seq: lines.count + 1, prev: head, time: now(), kind: kind, ceremony: ceremony)
  }

  /// Appends `entry`; returns its hash, the new chain head.
  @discardableResult
  func append(_ entry: TranscriptEntry) throws -> String {
    let line = try TranscriptLine.encode(entry)
    lines.append(line.text)
    entries.append(entry)
    head = line.hash
    return head
  }

  /// The JSON-lines text.
  var text: String { lines.map { $0 + "\n" }.joined() }
}

/// Encoding and decoding of one line.
enum TranscriptLine {
  static let hashSuffixLength = ",\"hash\":\"\"}".count + 64

  static func encode(_ entry: TranscriptEntry) throws -> (text: String, hash: String) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let body = String(decoding: try encoder.encode(entry), as: UTF8.self)
    let hash = Hex.encode(SHA256.hash(data: Array(body.utf8)))
    return (String(body.dropLast()) + ",\"hash\":\"\(hash)\"}", hash)
  }

  /// The entry and its stated hash; throws with the reason when the line is not well formed or
  /// its hash does not match its text.
  static func decode(_ line: Substring) throws -> (entry: TranscriptEntry, hash: String) {
    let bytes = Array(line.utf8)
    let marker = Array(",\"hash\":\"".utf8)
    guard bytes.count > hashSuffixLength, bytes.last == UInt8(ascii: "}"),
      Array(bytes[(bytes.count - hashSuffixLength)..<(bytes.count - hashSuffixLength + marker.count)]) == marker,
      bytes[bytes.count - 2] == UInt8(ascii: "\"")
    else {
      throw LineFailure("the line does not end with its hash")
    }
    let stated = String(decoding: bytes[(bytes.count - 66)..<(bytes.count - 2)], as: UTF8.self)
    let body = Array(bytes[..<(bytes.count - hashSuffixLength)]) + [UInt8(ascii: "}")]
    let computed = Hex.encode(SHA256.hash(data: body))
    guard computed == stated else {
      throw LineFailure("its text does not match its hash (the line was altered)")
    }
    do {
      return (try JSONDecoder().decode(TranscriptEntry.self, from: Data(body)), stated)
    } catch {
      throw LineFailure("not a transcript entry: \(error)")
    }
  }

  struct LineFailure: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
  }
}

enum Timestamp {
  static func format(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
  }
}

/// A transcript that does not verify: the line that broke (1-based) and why.
public struct TranscriptError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The line that broke, or nil for the transcript as a whole.
  public let line: Int?
  public let reason: String

  public init(line: Int?, _ reason: String) {
    self.line = line
    self.reason = reason
  }

  public var description: String { line.map { "line \($0): \(reason)" } ?? reason }
}

/// What a verified transcript says.
public struct TranscriptSummary: Sendable {
  public let ceremony: String
  public let lines: Int
  /// The hash of the last line.
  public let head: String
  /// The hash of the ceremony-completed line, which every officer signed.
  public let completedHead: String
  public let steps: Int
  /// Officers who signed the completed ceremony.
  public let signers: [String]
  public let participants: [TranscriptParticipant]
  public let entries: [TranscriptEntry]
}

/// Checks a transcript: the hash of every line and the chain, every signature against the
/// public keys recorded in its first line, every step's role and quorum, and that every officer
/// who took part signed the completed ceremony.
public enum TranscriptVerifier {
  /// Verifies the transcript at `path` (its `.jsonl`).
  public static func verify(path: String) throws -> TranscriptSummary {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TranscriptError(line: nil, "no transcript at \(path)")
    }
    return try verify(text: String(decoding: data, as: UTF8.self))
  }

  /// Verifies a transcript's text.
  public static func verify(text: String) throws -> TranscriptSummary {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    if lines.last == "" { lines.removeLast() }
    guard !lines.isEmpty else { throw TranscriptError(line: nil, "the transcript is empty") }
    var head = TranscriptWriter.genesis
    var entries = [TranscriptEntry]()
    var hashes = [String]()
    for (index, line) in lines.enumerated() {
      let number = index + 1
      let decoded: (entry: TranscriptEntry, hash: String)
      do { decoded = try TranscriptLine.decode(line) } catch let failure as TranscriptLine.LineFailure {
        throw TranscriptError(line: number, failure.reason)
      }
      guard decoded.entry.seq == number else {
        throw TranscriptError(line: number, "its sequence number is \(decoded.entry.seq)")
      }
      guard decoded.entry.prev == head else {
        throw TranscriptError(
          line: number, "it does not follow line \(index) (previous hash \(decoded.entry.prev) is not \(head))")
      }
      head = decoded.hash
      entries.append(decoded.entry)
      hashes.append(decoded.hash)
    }
    return try checkContent(entries, hashes: hashes)
  }

  private static func checkContent(_ entries: [TranscriptEntry], hashes: [String]) throws -> TranscriptSummary {
    let first = entries[0]
    guard first.kind == .ceremonyStarted, let participants = first.participants else {
      throw TranscriptError(line: 1, "the first line must be ceremony-started with the participants")
    }
    let ceremony = first.ceremony
    var keys = [String: TranscriptParticipant]()
    for participant in participants { keys[participant.name] = participant }
    var tookPart = [String]()
    func noteTookPart(_ name: String) { if !tookPart.contains(name) { tookPart.append(name) } }
    func check(_ signature: TranscriptSignature, over challenge: String, line: Int, role: Role?) throws {
      guard let participant = keys[signature.officer] else {
        throw TranscriptError(line: line, "\(signature.officer) signed but is not a participant of the ceremony")
      }
      if let role, !participant.roles.contains(role) {
        throw TranscriptError(
          line: line, "\(signature.officer) signed as \(role) but holds \(participant.roles.map(\.rawValue))")
      }
      guard let key = Hex.decode(participant.publicKey), let bytes = Hex.decode(signature.signature),
        OfficerSignature.isValid(bytes, over: Array(challenge.utf8), publicKey: key)
      else {
        throw TranscriptError(
          line: line, "the signature of \(signature.officer) does not verify under key \(participant.keyID)")
      }
    }

    var completedAt: Int? = nil
    var signers = [String]()
    var steps = 0
    for (index, entry) in entries.enumerated().dropFirst() {
      let line = index + 1
      guard entry.ceremony == ceremony else {
        throw TranscriptError(line: line, "it belongs to ceremony \(entry.ceremony), not \(ceremony)")
      }
      if completedAt != nil && entry.kind != .signOff {
        throw TranscriptError(line: line, "only sign-offs may follow ceremony-completed")
      }
      switch entry.kind {
      case .ceremonyStarted:
        throw TranscriptError(line: line, "a second ceremony-started line")
      case .stepAuthorised:
        guard let step = entry.step, let action = entry.action, let role = entry.role, let quorum = entry.quorum
        else { throw TranscriptError(line: line, "step-authorised without step, action, role or quorum") }
        let expected = Challenge.step(ceremony: ceremony, step: step, action: action, head: entry.prev)
        guard entry.challenge == expected else {
          throw TranscriptError(line: line, "the challenge is not the one step \(step) must sign")
        }
        if role == .unsealKeyHolder {
          let holders = entry.holders ?? []
          guard Set(holders).count == holders.count, holders.count >= quorum else {
            throw TranscriptError(line: line, "step \(step) needs \(quorum) distinct unseal key holders")
          }
        } else {
          let signatures = entry.signatures ?? []
          guard Set(signatures.map(\.officer)).count == signatures.count, signatures.count >= quorum else {
            throw TranscriptError(line: line, "step \(step) needs \(quorum) distinct \(role)s")
          }
          for signature in signatures {
            try check(signature, over: expected, line: line, role: role)
            noteTookPart(signature.officer)
          }
        }
        steps = max(steps, step)
      case .officerEnrolled:
        guard let signature = entry.signatures?.first, entry.signatures?.count == 1 else {
          throw TranscriptError(line: line, "officer-enrolled without its one signature")
        }
        let expected = Challenge.enrolment(
          ceremony: ceremony, officer: signature.officer, keyID: signature.keyID, head: entry.prev)
        guard entry.challenge == expected else {
          throw TranscriptError(line: line, "the challenge is not the enrolment of \(signature.officer)")
        }
        try check(signature, over: expected, line: line, role: nil)
        noteTookPart(signature.officer)
      case .stepCompleted:
        break
      case .ceremonyCompleted:
        completedAt = line
      case .signOff:
        guard let completed = completedAt else {
          throw TranscriptError(line: line, "a sign-off before the ceremony completed")
        }
        guard let signature = entry.signatures?.first, entry.signatures?.count == 1 else {
          throw TranscriptError(line: line, "sign-off without its one signature")
        }
        guard entry.head == hashes[completed - 1] else {
          throw TranscriptError(
            line: line, "the sign-off is not of the completed ceremony's chain head (line \(completed))")
        }
        let expected = Challenge.signOff(ceremony: ceremony, head: hashes[completed - 1])
        guard entry.challenge == expected else {
          throw TranscriptError(line: line, "the challenge is not the sign-off of line \(completed)")
        }
        try check(signature, over: expected, line: line, role: nil)
        guard !signers.contains(signature.officer) else {
          throw TranscriptError(line: line, "\(signature.officer) signed off twice")
        }
        signers.append(signature.officer)
      }
    }
    guard let completed = completedAt else {
      throw TranscriptError(line: nil, "the ceremony did not complete: there is no ceremony-completed line")
    }
    let missing = tookPart.filter { !signers.contains($0) }
    guard missing.isEmpty else {
      throw TranscriptError(line: nil, "\(missing.joined(separator: ", ")) took part but did not sign off")
    }
    return TranscriptSummary(
      ceremony: ceremony, lines: entries.count, head: hashes.last!, completedHead: hashes[completed - 1],
      steps: steps, signers: signers, participants: participants, entries: entries)
  }
}
