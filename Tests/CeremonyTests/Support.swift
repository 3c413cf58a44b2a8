import Ceremony
import Custody
import Foundation
import HSMBridge
import TestSupport

let initDeviceScript = repositoryRoot + "/Ceremonies/init-device.yaml"
let exampleParticipants = repositoryRoot + "/Ceremonies/participants.example.yaml"

/// Collects a ceremony's progress lines.
final class Lines: @unchecked Sendable {
  var lines: [String] = []
}

/// One rehearsal of a ceremony in its own temporary directory: `device` (the device to create)
/// and `rehearsal/` (officer tokens, share files, the credential).
struct Rehearsal {
  let directory: TemporaryDirectory
  let participantsPath: String
  var device: String { directory.appending("device") }
  var rehearsalDirectory: String { directory.appending("rehearsal") }

  /// `edit` changes the example participants file's text before it is used.
  init(edit: (String) -> String = { $0 }) throws {
    directory = try TemporaryDirectory("custos-ceremony")
    try FileManager.default.createDirectory(atPath: directory.appending("rehearsal"), withIntermediateDirectories: true)
    let text = try String(contentsOfFile: exampleParticipants, encoding: .utf8)
    participantsPath = directory.appending("participants.yaml")
    try edit(text).write(toFile: participantsPath, atomically: true, encoding: .utf8)
  }

  func participants() throws -> Participants {
    try Participants.load(participantsPath, baseDirectory: rehearsalDirectory)
  }

  /// Runs the init-device ceremony as `custos ceremony run --rehearsal` does.
  func run(script: String = initDeviceScript, lines: Lines = Lines()) throws -> CeremonyOutcome {
    let participants = try participants()
    return try CeremonyEngine(
      script: try CeremonyScript.load(script), participants: participants, deviceDirectory: device,
      rehearsal: true, prompter: RehearsalPrompter(participants: participants, output: { lines.lines.append($0) }),
      logger: testLogger
    ).run()
  }

  func share(_ holder: String) -> String { rehearsalDirectory + "/shares/\(holder).share" }
  var credential: String { rehearsalDirectory + "/crypto-user.credential" }

  /// What is left beside the device: nothing of a device, a staging directory, a share or the
  /// credential after a failed ceremony.
  func leftovers() throws -> [String] {
    var found = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
      $0 == "device" || $0.hasPrefix(".device.creating")
    }
    let shares = rehearsalDirectory + "/shares"
    if let files = try? FileManager.default.contentsOfDirectory(atPath: shares) {
      found += files.map { "shares/\($0)" }
    }
    if FileManager.default.fileExists(atPath: credential) { found.append("crypto-user.credential") }
    return found
  }
}

/// Every regular file under `path` with its bytes.
func snapshot(_ path: String) throws -> [String: Data] {
  var files = [String: Data]()
  guard let walker = FileManager.default.enumerator(atPath: path) else { return files }
  for case let relative as String in walker {
    var isDirectory: ObjCBool = false
    _ = FileManager.default.fileExists(atPath: path + "/" + relative, isDirectory: &isDirectory)
    if !isDirectory.boolValue { files[relative] = FileManager.default.contents(atPath: path + "/" + relative) }
  }
  return files
}
