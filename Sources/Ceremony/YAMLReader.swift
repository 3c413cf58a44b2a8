import Yams

/// Strict reading of a YAML document: every key must be known, every value of the right type,
/// and every complaint names the file and line.
struct YAMLReader {
  let file: String
  let code: CeremonyError.Code

  /// The document's root node.
  func root(_ text: String) throws -> Node {
    do {
      guard let node = try Yams.compose(yaml: text) else { throw fail(nil, "the file is empty") }
      return node
    } catch let error as CeremonyError {
      throw error
    } catch {
      throw CeremonyError(code, "\(file) is not valid YAML: \(error)")
    }
  }

  func fail(_ node: Node?, _ reason: String) -> CeremonyError {
    CeremonyError(code, "\(file)\(node?.mark.map { " line \($0.line)" } ?? ""): \(reason)")
  }

  /// The pairs of a mapping, refusing keys outside `allowed` and keys given twice.
  func mapping(_ node: Node, _ what: String, allowed: Set<String>) throws -> [String: Node] {
    guard let mapping = node.mapping else { throw fail(node, "\(what) must be a mapping of keys to values") }
    var result = [String: Node]()
    for (key, value) in mapping {
      guard let name = key.string else { throw fail(key, "\(what) has a key that is not text") }
      guard allowed.contains(name) else {
        throw fail(key, "unknown key '\(name)' in \(what) (known: \(allowed.sorted().joined(separator: ", ")))")
      }
      guard result[name] == nil else { throw fail(key, "key '\(name)' is given twice in \(what)") }
      result[name] = value
    }
    return result
  }

  func sequence(_ node: Node, _ what: String) throws -> [Node] {
    guard let sequence = node.sequence else { throw fail(node, "\(what) must be a list") }
    return Array(sequence)
  }

  func string(_ node: Node?, _ what: String, in parent: Node) throws -> String {
    guard let node else { throw fail(parent, "\(what) is missing") }
    guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
      throw fail(node, "\(what) must be non-empty text")
    }
    return scalar.string
  }

  func optionalString(_ node: Node?, _ what: String) throws -> String? {
    guard let node else { return nil }
    guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
      throw fail(node, "\(what) must be non-empty text")
    }
    return scalar.string
  }

  func int(_ node: Node?, _ what: String, in parent: Node) throws -> Int {
    guard let node else { throw fail(parent, "\(what) is missing") }
    guard let value = node.int else { throw fail(node, "\(what) must be a whole number") }
    return value
  }

  func strings(_ node: Node?, _ what: String, in parent: Node) throws -> [String] {
    guard let node else { throw fail(parent, "\(what) is missing") }
    return try sequence(node, what).map { try string($0, what, in: node) }
  }
}
