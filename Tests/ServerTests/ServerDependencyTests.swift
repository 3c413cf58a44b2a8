import Foundation
import Testing

@Suite struct ServerDependencyTests {}
