import Custody
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reading secrets from the terminal without echo, as a PIN pad would.
enum Prompt {
  /// Asks for a secret on the controlling terminal with echo off; the answer goes straight into
  /// a zeroing buffer.
  static func secret(_ question: String) throws -> SecretBytes {
    let terminal = open("/dev/tty", O_RDWR | O_CLOEXEC)
    guard terminal >= 0 else {
      throw CommandFailure("cannot prompt for '\(question)': no terminal (give it as an option or run with a terminal)")
    }
    defer { close(terminal) }
    var original = termios()
    tcgetattr(terminal, &original)
    var silent = original
    silent.c_lflag &= ~tcflag_t(ECHO)
    tcsetattr(terminal, TCSAFLUSH, &silent)
    defer {
      tcsetattr(terminal, TCSAFLUSH, &original)
      _ = write(terminal, "\n", 1)
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
    return SecretBytes(buffer[0..<length])
  }
}
