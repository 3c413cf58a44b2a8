import Custody
import Foundation
import HSMBridge

#if canImport(Glibc)
import Glibc
#endif

/// How a ceremony talks to the people in the room: progress, who acts, PINs and passwords.
///
/// `TerminalPrompter` asks on the terminal (no echo for secrets); `RehearsalPrompter` answers
/// from the participants file so a rehearsal runs unattended.
public protocol CeremonyPrompter: AnyObject {
  /// Shows a line of progress.
  func say(_ text: String)
  /// The officers who authorise `step`, in order (the ceremony checks roles and distinctness).
  func officers(for step: CeremonyStep, candidates: [String]) throws -> [String]
  /// The unseal key holders who act at `step`.
  func holders(for step: CeremonyStep, candidates: [String]) throws -> [String]
  /// `officer`'s PIN, typed on their token's PIN pad, for `purpose`.
  func pin(of officer: String, for purpose: String) throws -> SecretBytes
  /// The password `holder` chooses for their new share file.
  func newSharePassword(of holder: String) throws -> SecretBytes
  /// The password `holder` types to open their share file.
  func sharePassword(of holder: String) throws -> SecretBytes
}

/// Answers every prompt from the participants file: the ceremony runs unattended (CI, practice).
public final class RehearsalPrompter: CeremonyPrompter {
  private let participants: Participants
  private let output: (String) -> Void

  /// - Parameter output: where progress goes (standard output for the CLI).
  public init(participants: Participants, output: @escaping (String) -> Void) {
    self.participants = participants
    self.output = output
  }

  public func say(_ text: String) { output(text) }

  public func officers(for step: CeremonyStep, candidates: [String]) throws -> [String] {
    let chosen = participants.acting[step.number] ?? Array(candidates.prefix(step.quorum))
    output("  acting: \(chosen.joined(separator: ", "))")
    return chosen
  }

  public func holders(for step: CeremonyStep, candidates: [String]) throws -> [String] {
    let chosen = participants.acting[step.number] ?? Array(candidates.prefix(step.quorum))
    output("  acting: \(chosen.joined(separator: ", "))")
    return chosen
  }

  public func pin(of officer: String, for purpose: String) throws -> SecretBytes {
    guard let pin = participants.officer(officer)?.pin else {
      throw CeremonyError(.participantsInvalid, "\(participants.path) gives no pin for \(officer)")
    }
    return pin
  }

  public func newSharePassword(of holder: String) throws -> SecretBytes {
    guard let password = participants.holder(holder)?.password else {
      throw CeremonyError(.participantsInvalid, "\(participants.path) gives no password for \(holder)")
    }
    return password
  }

  public func sharePassword(of holder: String) throws -> SecretBytes {
    guard let entry = participants.holder(holder), let password = entry.unsealPassword ?? entry.password else {
      throw CeremonyError(.participantsInvalid, "\(participants.path) gives no password for \(holder)")
    }
    return password
  }
}

/// Asks the people in the room on the controlling terminal; secrets are read without echo.
public final class TerminalPrompter: CeremonyPrompter {
  public init() {}

  public func say(_ text: String) { print(text) }

  public func officers(for step: CeremonyStep, candidates: [String]) throws -> [String] {
    try (1...step.quorum).map { index in
      try TerminalInput.line(
        "  \(step.role) \(index) of \(step.quorum), your name (enrolled: \(candidates.joined(separator: ", ")))")
    }
  }

  public func holders(for step: CeremonyStep, candidates: [String]) throws -> [String] {
    try (1...step.quorum).map { index in
      try TerminalInput.line(
        "  Unseal key holder \(index) of \(step.quorum), your name (enrolled: \(candidates.joined(separator: ", ")))")
    }
  }

  public func pin(of officer: String, for purpose: String) throws -> SecretBytes {
    try TerminalInput.secret("  \(officer), your token PIN to \(purpose)")
  }

  public func newSharePassword(of holder: String) throws -> SecretBytes {
    for _ in 0..<3 {
      let first = try TerminalInput.secret("  \(holder), choose the password of your share file")
      let second = try TerminalInput.secret("  \(holder), the same password again")
      if first.count >= 8 && first.constantTimeEquals(second) { return first }
      print("  the two passwords differ or are shorter than 8 characters; again")
    }
    throw CeremonyError(.actionFailed, "\(holder) did not give a matching password of 8 or more characters")
  }

  public func sharePassword(of holder: String) throws -> SecretBytes {
    try TerminalInput.secret("  \(holder), the password of your share file")
  }
}

/// Reading from the controlling terminal, as a PIN pad would.
public enum TerminalInput {
  /// Asks for a secret with echo off; the answer goes straight into a zeroing buffer.
  public static func secret(_ question: String) throws -> SecretBytes {
    try withTerminal(question, echo: false) { SecretBytes($0) }
  }

  /// Asks for a line of text, echoed.
  public static func line(_ question: String) throws -> String {
    try withTerminal(question, echo: true) { String(decoding: $0, as: UTF8.self) }
  }

  private static func withTerminal<R>(_ question: String, echo: Bool, _ body: (ArraySlice<UInt8>) -> R) throws -> R {
    let terminal = open("/dev/tty", O_RDWR | O_CLOEXEC)
    guard terminal >= 0 else {
      throw CeremonyError(
        .actionFailed, "cannot ask '\(question)': no terminal (give it as an option, or rehearse with --rehearsal)")
    }
    defer { close(terminal) }
    var original = termios()
    tcgetattr(terminal, &original)
    if !echo {
      var silent = original
      silent.c_lflag &= ~tcflag_t(ECHO)
      tcsetattr(terminal, TCSAFLUSH, &silent)
    }
    defer {
      if !echo {
        tcsetattr(terminal, TCSAFLUSH, &original)
        _ = write(terminal, "\n", 1)
      }
    }
    let prompt = Array("\(question): ".utf8)
    _ = write(terminal, prompt, prompt.count)
    var buffer = [UInt8](repeating: 0, count: 256)
    defer { SecretBytes.zero(&buffer) }
    var length = 0
    while length < buffer.count {
      var byte: UInt8 = 0
      guard read(terminal, &byte, 1) == 1, byte != 0x0A, byte != 0x0D else { break }
      buffer[length] = byte
      length += 1
    }
    return body(buffer[0..<length])
  }
}
