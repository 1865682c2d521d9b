package protocol_test

import "context"

var bg = context.Background()
