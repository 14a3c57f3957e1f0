import BKFleet
print("bkfleet \(BKFleetVersion.string)")
