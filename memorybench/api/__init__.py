"""What plugin authors import: the registry type and the method, detector and metric APIs."""
