import Foundation
import TestSupport
import Testing

/// What the server can reach, proven from the package itself: neither `Server` nor
/// `custos-server` has HSMBridge, CPKCS11, Vault, Ceremony or DeviceServer anywhere in its
/// dependency closure, so the server cannot load a PKCS#11 module or touch a token (DESIGN.md
/// section 1: the dependency graph makes it impossible, not a convention).
@Suite struct ServerDependencyTests {
  static let forbidden: Set<String> = ["HSMBridge", "CPKCS11", "Vault", "Ceremony", "DeviceServer"]

  /// Package.swift as SwiftPM reads it: each target's dependencies on targets and products.
  static func manifest() throws -> [String: [String]] {
    // A scratch path of its own: the package's .build is locked by the `swift test` running us.
    let scratch = try TemporaryDirectory("custos-dump-package")
    let result = try runProcess(
      "/usr/bin/env",
      ["swift", "package", "--package-path", repositoryRoot, "--scratch-path", scratch.path, "dump-package"])
    guard result.status == 0, let data = result.output.data(using: .utf8),
      let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
      let targets = json["targets"] as? [[String: Any]]
    else { throw TestSupportError("swift package dump-package failed: \(result.error)") }
    var graph = [String: [String]]()
    for target in targets {
      guard let name = target["name"] as? String else { continue }
      var names = [String]()
      for dependency in target["dependencies"] as? [[String: Any]] ?? [] {
        // {"byName": [NAME, condition]}, {"target": [NAME, condition]}, {"product": [NAME, PACKAGE, ...]}
        for kind in ["byName", "target", "product"] {
          if let entry = dependency[kind] as? [Any], let dependencyName = entry.first as? String {
            names.append(kind == "product" ? "product:\(dependencyName)" : dependencyName)
          }
        }
      }
      graph[name] = names
    }
    return graph
  }

  /// Every target `target` reaches through target dependencies.
  static func closure(of target: String, in graph: [String: [String]]) -> Set<String> {
    var seen = Set<String>()
    var stack = [target]
    while let next = stack.popLast() {
      for dependency in graph[next] ?? [] where seen.insert(dependency).inserted {
        stack.append(dependency)
      }
    }
    return seen
  }

  @Test func serverNeverReachesTheTokenSide() throws {
    let graph = try Self.manifest()
    for target in ["Server", "custos-server", "CustosAPI"] {
      let reached = Self.closure(of: target, in: graph)
      #expect(reached.isDisjoint(with: Self.forbidden), "\(target) reaches \(reached.intersection(Self.forbidden))")
    }
    // The closure is really computed: the server reaches the wire and the model, and the device
    // process (the other side) does reach the forbidden targets.
    let server = Self.closure(of: "Server", in: graph)
    #expect(server.isSuperset(of: ["VaultWire", "Custody", "CustosAPI"]))
    #expect(
      Self.closure(of: "custos-hsm", in: graph).isSuperset(of: ["DeviceServer", "Vault", "HSMBridge", "CPKCS11"]))
  }

  @Test func openAPIDocumentIsValid() throws {
    let result = try runProcess(
      "/usr/bin/env",
      [
        "python3", "-c",
        "import sys; from openapi_spec_validator import validate; from openapi_spec_validator.readers import read_from_filename; d, _ = read_from_filename(sys.argv[1]); validate(d); print('valid')",
        repositoryRoot + "/openapi.yaml",
      ])
    #expect(result.status == 0, "openapi-spec-validator: \(result.error)")
    #expect(result.output.contains("valid"))
  }

  @Test func responseCheckerRefusesWhatTheSpecDoesNotAllow() throws {
    // The checker the process tests rely on must fail on answers the spec does not allow.
    let directory = try TemporaryDirectory("custos-checker")
    let file = directory.appending("answers.jsonl")
    try """
    {"operation":"getRequest","status":404,"body":{"code":"requestNotFound","message":"no"}}
    {"operation":"getRequest","status":404,"body":{"code":"requestNotFound","message":"no","extra":1}}
    {"operation":"getRequest","status":418,"body":{"code":"x","message":"x"}}
    {"operation":"listWallets","status":200,"body":{"wallets":[{"id":1}]}}
    """.write(toFile: file, atomically: true, encoding: .utf8)
    let result = try runProcess(
      "/usr/bin/env",
      ["python3", repositoryRoot + "/scripts/check-api-responses.py", repositoryRoot + "/openapi.yaml", file])
    #expect(result.status == 1)
    #expect(result.output.contains("line 2: getRequest 404 at (body): Additional properties are not allowed"))
    #expect(result.output.contains("line 3: getRequest answered 418, which the spec does not document"))
    #expect(result.output.contains("line 4: listWallets 200 at wallets/0"))
    #expect(!result.output.contains("line 1:"))
  }
}
