import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Named points of a vault call where the crash-consistency tests stop the server for real.
/// Inert unless `CUSTOS_SERVER_FAULT` is set when the process starts:
///
/// - `POINT:crash` - the process sends itself SIGKILL on reaching POINT;
/// - `POINT:pause:FILE` - on reaching POINT it creates `FILE.reached` and waits until FILE
///   exists (so a test can kill the device exactly then), and goes on.
///
/// Points: `after-intent` (the intent is written, the vault not called yet), `after-result`
/// (the vault answered, nothing of its result stored), `after-apply` (the result is stored, the
/// HTTP answer not sent).
enum FaultInjection {
  static let setting: (point: String, action: String, file: String?)? = {
    guard let text = ProcessInfo.processInfo.environment["CUSTOS_SERVER_FAULT"], !text.isEmpty else { return nil }
    let parts = text.split(separator: ":", maxSplits: 2).map(String.init)
    guard parts.count >= 2 else { return nil }
    return (parts[0], parts[1], parts.count > 2 ? parts[2] : nil)
  }()

  /// Called at each point; does nothing unless the setting names it.
  static func reach(_ point: String) async {
    guard let setting, setting.point == point else { return }
    switch setting.action {
    case "crash":
      FileHandle.standardError.write(Data("custos-server: fault injection: SIGKILL at \(point)\n".utf8))
      kill(getpid(), SIGKILL)
    case "pause":
      guard let file = setting.file else { return }
      _ = FileManager.default.createFile(atPath: file + ".reached", contents: nil)
      while !FileManager.default.fileExists(atPath: file) {
        try? await Task.sleep(for: .milliseconds(10))
      }
    default:
      return
    }
  }
}
