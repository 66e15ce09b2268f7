import Foundation
import Policy

/// Feeds each record's actual cost into the budget tracker the policy reads (off the hot path).
public struct BudgetSink: RecordSink {
    public let budgets: BudgetTracker

    public init(budgets: BudgetTracker) {
        self.budgets = budgets
    }

    public func record(_ r: RequestRecord) {
        guard let pico = r.costPicoUSD, pico > 0 else { return }
        budgets.recordPico(app: r.application, pico: pico, at: Date())
    }
}
