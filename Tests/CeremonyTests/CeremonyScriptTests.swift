import Ceremony
import Foundation
import HSMBridge
import Testing

private let minimal = """
  ceremony: tiny
  title: A tiny ceremony
  version: 1
  steps:
    - step: 1
      title: Enrol
      role: Security Officer
      quorum: 1
      action: enrol-officers
    - step: 2
      title: Create
      role: Security Officer
      quorum: 1
      action: create-device
      with: {partitions: [custody]}

  """

private func parseError(_ text: String) -> CeremonyError? {
  do {
    _ = try CeremonyScript.parse(text, path: "test.yaml")
    return nil
  } catch let error as CeremonyError {
    return error
  } catch {
    return nil
  }
}

@Suite struct CeremonyScriptTests {
  @Test func initDeviceIsTheCeremonyOfTheIssue() throws {
    let script = try CeremonyScript.load(initDeviceScript)
    #expect(script.name == "init-device")
    #expect(script.partitions == ["custody", "admin"])
    #expect(script.steps.map(\.number) == Array(1...script.steps.count))
    let keySteps = script.steps.filter { $0.action == .generateKey }
    #expect(
      keySteps.map { "\($0.parameters["partition"]!)/\($0.parameters["key"]!)" } == [
        "string(\"custody\")/string(\"custos.master\")", "string(\"custody\")/string(\"custos.sync\")",
        "string(\"custody\")/string(\"custos.audit\")", "string(\"admin\")/string(\"custos.codesign\")",
        "string(\"admin\")/string(\"custos.attest\")",
      ])
    #expect(keySteps.allSatisfy { $0.role == .cryptoOfficer && $0.quorum == 2 })
    let split = try #require(script.steps.first { $0.action == .splitActivationSecret })
    #expect(split.parameters["threshold"] == .int(2) && split.parameters["shares"] == .int(3))
    #expect(script.steps.first { $0.action == .verifyActivation }?.quorum == 2)
    #expect(script.steps.allSatisfy { !$0.title.isEmpty && !$0.does.isEmpty && !$0.records.isEmpty })
    #expect(script.sha256.count == 64)
  }

  @Test func aMinimalScriptParses() throws {
    let script = try CeremonyScript.parse(minimal, path: "tiny.yaml")
    #expect(script.steps.count == 2)
    #expect(script.partitions == ["custody"])
  }

  @Test func mistakesAreNamedWithTheirLine() throws {
    let unknownAction = parseError(
      minimal.replacingOccurrences(of: "action: create-device", with: "action: make-device"))
    #expect(unknownAction?.code == .scriptInvalid)
    #expect(unknownAction?.reason.contains("line 14") == true)
    #expect(unknownAction?.reason.contains("unknown action 'make-device'") == true)

    let typo = parseError(
      minimal.replacingOccurrences(of: "    quorum: 1\n    action: enrol", with: "    quorom: 1\n    action: enrol"))
    #expect(typo?.reason.contains("unknown key 'quorom'") == true)
    #expect(typo?.reason.contains("line 8") == true)

    let order = parseError(minimal.replacingOccurrences(of: "- step: 2", with: "- step: 3"))
    #expect(order?.reason.contains("out of order") == true)

    let role = parseError(
      minimal.replacingOccurrences(
        of: "    role: Security Officer\n    quorum: 1\n    action: create",
        with: "    role: Audit User\n    quorum: 1\n    action: create"))
    #expect(role?.reason.contains("create-device is done by Security Officer, not Audit User") == true)

    let unknownRole = parseError(minimal.replacingOccurrences(of: "role: Security Officer", with: "role: Janitor"))
    #expect(unknownRole?.reason.contains("unknown role 'Janitor'") == true)

    let zero = parseError(minimal.replacingOccurrences(of: "quorum: 1", with: "quorum: 0"))
    #expect(zero?.reason.contains("quorum must be at least 1") == true)

    let key = parseError(
      minimal + """
          - step: 3
            title: Secret
            role: Security Officer
            quorum: 1
            action: generate-activation-secret
          - step: 4
            title: Key
            role: Crypto Officer
            quorum: 2
            action: generate-key
            with: {partition: custody, key: custos.codesign}

        """)
    #expect(key?.reason.contains("no key 'custos.codesign' in partition 'custody'") == true)

    let early = parseError(
      minimal.replacingOccurrences(
        of: "    role: Security Officer\n    quorum: 1\n    action: create-device\n    with: {partitions: [custody]}",
        with: "    role: Unseal Key Holder\n    quorum: 2\n    action: verify-activation"))
    #expect(early?.reason.contains("verify-activation needs an earlier split-activation-secret step") == true)

    let records = parseError(minimal + "    records: [everything]\n")
    #expect(records?.reason.contains("does not record 'everything'") == true)

    let missingParameter = parseError(minimal.replacingOccurrences(of: "    with: {partitions: [custody]}\n", with: ""))
    #expect(missingParameter?.reason.contains("needs 'with: {partitions: ...}'") == true)

    let noDevice = parseError(String(minimal[..<minimal.range(of: "  - step: 2")!.lowerBound]))
    #expect(noDevice?.reason.contains("no create-device step") == true)

    #expect(parseError("steps: [1, 2") != nil)
  }
}
