import Catalog
import Foundation
import Wire

/// Prices from the model catalog.
public struct CatalogPriceBook: PriceBook {
    public let catalog: ModelCatalog

    public init(catalog: ModelCatalog) {
        self.catalog = catalog
    }

    public func costPicoUSD(model: String, usage: Usage) -> Int64? {
        catalog.costPicoUSD(model: model, inputTokens: usage.promptTokens, cachedInputTokens: usage.cachedTokens,
                            outputTokens: usage.completionTokens)
    }
}
