import Custody
import Foundation

/// What a trading bot running `custos approve --auto` approves without a person: a JSON file,
///
/// ```
/// {"format": "custos-approval-rule", "version": 1,
///  "wallets": [1, 2],                          required: the wallets it watches and approves for
///  "operations": ["sign-eip1559"],             required: sign-eip1559 and/or sign-personal-message
///  "chainIds": [1],                            optional: allowed EIP-155 chain ids (absent: any)
///  "destinations": ["0x1111...1111"],          optional: allowed `to` addresses (absent: any)
///  "maxValueWei": "10000000000000000",         optional: largest `value` (absent: no limit)
///  "allowCallData": false,                     optional: call data or an access list (default false)
///  "paths": ["m/44'/60'/0'/0/0"]}              optional: allowed signing key paths (absent: any)
/// ```
///
/// An unknown field, a wallet change operation (those are approved by a person, never by a
/// rule), or a malformed value is refused with the field named. The rule is judged on the
/// envelope the tool decoded itself, never on the server's description of it.
public struct AutoApprovalRule: Sendable, Hashable {
  public static let format = "custos-approval-rule"
  /// The operations a rule may allow.
  public static let ruleOperations: Set<String> = ["sign-eip1559", "sign-personal-message"]

  public var wallets: [UInt64]
  public var operations: Set<String>
  public var chainIDs: Set<UInt64>?
  public var destinations: Set<[UInt8]>?
  public var maxValue: Amount?
  public var allowCallData: Bool
  public var paths: Set<String>?

  public init(
    wallets: [UInt64], operations: Set<String>, chainIDs: Set<UInt64>? = nil, destinations: Set<[UInt8]>? = nil,
    maxValue: Amount? = nil, allowCallData: Bool = false, paths: Set<String>? = nil
  ) {
    self.wallets = wallets
    self.operations = operations
    self.chainIDs = chainIDs
    self.destinations = destinations
    self.maxValue = maxValue
    self.allowCallData = allowCallData
    self.paths = paths
  }

  /// Reads and checks a rule file.
  public static func load(_ path: String) throws(ApproverError) -> AutoApprovalRule {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ApproverError(.ruleFileInvalid, "cannot read rule file \(path)")
    }
    return try parse(data, source: path)
  }

  /// The file's fields as JSON gives them (types checked by the decoder: a number where a
  /// boolean belongs, a negative wallet id or a fraction is refused).
  private struct File: Decodable {
    var format: String
    var version: Int
    var wallets: [Int64]
    var operations: [String]
    var chainIds: [Int64]?
    var destinations: [String]?
    var maxValueWei: String?
    var allowCallData: Bool?
    var paths: [String]?
  }

  /// Parses a rule from JSON; `source` names it in errors.
  public static func parse(_ data: Data, source: String = "rule") throws(ApproverError) -> AutoApprovalRule {
    func fail(_ field: String, _ reason: String) -> ApproverError {
      ApproverError(.ruleFileInvalid, "\(source): \(field): \(reason)")
    }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw ApproverError(.ruleFileInvalid, "\(source) is not a JSON object")
    }
    let known: Set<String> = [
      "format", "version", "wallets", "operations", "chainIds", "destinations", "maxValueWei", "allowCallData", "paths",
    ]
    if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
      throw fail(unknown, "unknown field (known: \(known.sorted().joined(separator: ", ")))")
    }
    let file: File
    do {
      file = try JSONDecoder().decode(File.self, from: data)
    } catch let DecodingError.typeMismatch(_, context) {
      throw fail(context.codingPath.map(\.stringValue).joined(separator: "."), "has the wrong type")
    } catch let DecodingError.keyNotFound(key, _) {
      throw fail(key.stringValue, "is required")
    } catch let DecodingError.dataCorrupted(context) {
      throw fail(
        context.codingPath.map(\.stringValue).joined(separator: "."), "is not valid: \(context.debugDescription)")
    } catch {
      throw ApproverError(.ruleFileInvalid, "\(source): \(error)")
    }
    guard file.format == format else { throw fail("format", "is not '\(format)'") }
    guard file.version == 1 else { throw fail("version", "\(file.version) is not 1") }
    guard !file.wallets.isEmpty, file.wallets.allSatisfy({ $0 >= 1 }) else {
      throw fail("wallets", "is a non-empty list of wallet ids (from 1)")
    }
    guard !file.operations.isEmpty else { throw fail("operations", "is a non-empty list") }
    for operation in file.operations where !ruleOperations.contains(operation) {
      throw fail(
        "operations",
        "'\(operation)' cannot be approved by a rule (allowed: \(ruleOperations.sorted().joined(separator: ", ")); wallet changes need a person)"
      )
    }
    if let chainIDs = file.chainIds, chainIDs.isEmpty || !chainIDs.allSatisfy({ $0 >= 1 }) {
      throw fail("chainIds", "is a non-empty list of chain ids (from 1)")
    }
    var destinations: Set<[UInt8]>? = nil
    if let list = file.destinations {
      var set = Set<[UInt8]>()
      for text in list {
        guard let address = EthereumAddress.parse(text) else {
          throw fail(
            "destinations", "'\(text)' is not an Ethereum address (0x and 40 hex digits, EIP-55 if mixed case)")
        }
        set.insert(address)
      }
      destinations = set
    }
    var maxValue: Amount? = nil
    if let text = file.maxValueWei {
      guard let amount = Amount(decimal: text) else { throw fail("maxValueWei", "is an amount of wei in decimal") }
      maxValue = amount
    }
    return AutoApprovalRule(
      wallets: file.wallets.map { UInt64($0) }, operations: Set(file.operations),
      chainIDs: file.chainIds.map { Set($0.map { UInt64($0) }) },
      destinations: destinations, maxValue: maxValue, allowCallData: file.allowCallData ?? false,
      paths: file.paths.map(Set.init))
  }

  /// Why the rule does not allow `envelope` (empty when it does): every broken condition.
  public func refusals(of envelope: RequestEnvelope) -> [String] {
    var reasons = [String]()
    if !wallets.contains(envelope.walletID) {
      reasons.append("wallet \(envelope.walletID) is not one the rule watches")
    }
    guard operations.contains(envelope.operation.name) else {
      reasons.append("operation \(envelope.operation.name) is not allowed")
      return reasons
    }
    if let chain = envelope.chain {
      if let chainIDs {
        if let id = chain.eip155ChainID, chainIDs.contains(id) {
        } else {
          reasons.append("chain \(chain.chain) is not allowed")
        }
      }
      if let paths, !paths.contains(chain.pathText) {
        reasons.append("key path \(chain.pathText) is not allowed")
      }
    }
    if case .signEIP1559(let transaction) = envelope.operation {
      if let destinations, !destinations.contains(transaction.to) {
        reasons.append("destination \(EthereumAddress.checksummed(transaction.to)) is not on the allowlist")
      }
      if let maxValue, transaction.value > maxValue {
        reasons.append("value \(transaction.value) wei exceeds the rule's \(maxValue) wei")
      }
      if !allowCallData, !transaction.data.isEmpty || !transaction.accessList.isEmpty {
        reasons.append("call data or an access list is not allowed")
      }
    }
    return reasons
  }
}
