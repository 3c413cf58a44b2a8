/// The readable record of a transcript: participants, every step with who authorised it and
/// what it did (object handles and attributes, public keys), timestamps and the sign-offs.
/// The JSON lines beside it are the record of authority; this is rendered from them.
enum TranscriptMarkdown {
  static func render(
    _ entries: [TranscriptEntry], head: String, jsonLinesName: String, title: String
  ) -> String {
    var out = [String]()
    guard let start = entries.first else { return "" }
    out.append("# Ceremony transcript: \(title)")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    out.append("| ceremony | `\(start.ceremony)` |")
    for key in (start.records ?? [:]).keys.sorted() {
      out.append("| \(key) | \(cell(start.records![key]!.text)) |")
    }
    out.append("| started | \(start.time) |")
    if let completed = entries.last(where: { $0.kind == .ceremonyCompleted }) {
      out.append("| completed | \(completed.time) |")
    }
    out.append("| chain head | `\(head)` |")
    out.append("| record of authority | `\(jsonLinesName)` (verify with `custos ceremony verify \(jsonLinesName)`) |")
    out.append("")
    out.append("## Participants")
    out.append("")
    out.append("| officer | roles | key ID | token serial | public key (P-256, X9.63) |")
    out.append("|---|---|---|---|---|")
    for participant in start.participants ?? [] {
      out.append(
        "| \(participant.name) | \(participant.roles.map(\.rawValue).joined(separator: ", ")) | `\(participant.keyID)` | \(participant.tokenSerial) | `\(participant.publicKey)` |"
      )
    }
    if let holders = start.holders, !holders.isEmpty {
      out.append("")
      out.append("Unseal key holders: \(holders.joined(separator: ", ")).")
    }
    out.append("")
    out.append("## Steps")
    for entry in entries.dropFirst() {
      switch entry.kind {
      case .stepAuthorised:
        out.append("")
        out.append("### Step \(entry.step ?? 0): \(entry.title ?? "")")
        out.append("")
        out.append(
          "Action `\(entry.action ?? "")`, role \(entry.role?.rawValue ?? "?"), quorum \(entry.quorum ?? 0). Challenge: `\(entry.challenge ?? "")`."
        )
        out.append("")
        if let holders = entry.holders {
          out.append("- \(entry.time): unseal key holders acting: \(holders.joined(separator: ", "))")
        }
        for signature in entry.signatures ?? [] {
          out.append(
            "- \(signature.time): authorised by **\(signature.officer)** (key `\(signature.keyID)`), signature `\(signature.signature)`"
          )
        }
      case .officerEnrolled:
        for signature in entry.signatures ?? [] {
          out.append(
            "- \(signature.time): **\(signature.officer)** proved possession of token key `\(signature.keyID)`, signature `\(signature.signature)`"
          )
        }
      case .stepCompleted:
        out.append("")
        out.append("Completed \(entry.time).")
        for key in (entry.records ?? [:]).keys.sorted() {
          out.append(contentsOf: render(key, entry.records![key]!))
        }
      case .ceremonyCompleted:
        out.append("")
        out.append("## Completed")
        out.append("")
        out.append("\(entry.time). ")
        for key in (entry.records ?? [:]).keys.sorted() {
          out.append(contentsOf: render(key, entry.records![key]!))
        }
      case .signOff:
        if entry.prev == entries.first(where: { $0.kind == .signOff })?.prev {
          out.append("")
          out.append("## Signed by")
          out.append("")
          out.append("Every officer who took part signed the chain head `\(entry.head ?? "")` with their token:")
          out.append("")
        }
        for signature in entry.signatures ?? [] {
          out.append(
            "- \(signature.time): **\(signature.officer)** (key `\(signature.keyID)`): `\(signature.signature)`")
        }
      case .ceremonyStarted:
        break
      }
    }
    out.append("")
    return out.joined(separator: "\n")
  }

  private static func render(_ key: String, _ value: JSONValue) -> [String] {
    switch value {
    case .array(let items) where items.contains(where: { if case .object = $0 { true } else { false } }):
      var lines = ["", "**\(key)**:", ""]
      for item in items {
        if case .object(let fields) = item {
          lines.append(
            "- "
              + fields.keys.sorted().filter { $0 != "attributes" }.map { "\($0): \(fields[$0]!.text)" }.joined(
                separator: ", "))
          if case .object(let attributes)? = fields["attributes"] {
            lines.append("")
            lines.append("  | attribute | value |")
            lines.append("  |---|---|")
            for name in attributes.keys.sorted() { lines.append("  | \(name) | \(cell(attributes[name]!.text)) |") }
            lines.append("")
          }
        } else {
          lines.append("- \(item.text)")
        }
      }
      return lines
    default:
      return ["- \(key): \(value.text)"]
    }
  }

  private static func cell(_ text: String) -> String {
    text.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ")
  }
}
