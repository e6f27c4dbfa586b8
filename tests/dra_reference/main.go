// Command dra-reference runs kube-scheduler's structured allocator
// (k8s.io/dynamic-resource-allocation v0.36.3) on cases read from stdin, one JSON
// object a line, and writes one JSON result a line to stdout, in the same order.
//
// A case:
//
//	{"id": "...", "node": "node1", "slices": [ResourceSlice...], "claims": [ResourceClaim...],
//	 "classes": [DeviceClass...], "allocated": [["driver", "pool", "device"], ...], "slicesKey": "..."}
//
// With "slicesKey", the slices are kept under that key, and a later case with the same key and no
// "slices" reuses them (many cases share one cluster's slices; decoding them once saves most of the time).
//
// A result:
//
//	{"id": "...", "result": "allocated", "claims": [[{"request", "driver", "pool", "device", "adminAccess"}...]...]}
//	{"id": "...", "result": "unschedulable", "reason": "..."}   // nil result, or an ErrFailedAllocationOnNode error
//	{"id": "...", "result": "error", "reason": "..."}           // any other error: the scheduling attempt fails
//	{"id": "...", "result": "timeout"}                          // not done within "timeoutMs" (default 10000, kube-scheduler's filter timeout)
//
// Every result also carries "steps": the allocator's NumAllocateOneInvocations (its search steps).
//
// The allocator gets the feature set kube-scheduler v1.36.3 passes with its default
// feature gates (pkg/scheduler/framework/plugins/dynamicresources AllocatorFeatures):
// AdminAccess, PrioritizedList, PartitionableDevices, DeviceTaints, DeviceBindingAndStatus
// and ConsumableCapacity on (which selects the "incubating" implementation), and a CEL
// cache with consumable capacity on and list-type attributes off, as the plugin builds it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"
)

type inputCase struct {
	ID        string                       `json:"id"`
	Node      string                       `json:"node"`
	Slices    []*resourceapi.ResourceSlice `json:"slices"`
	Claims    []*resourceapi.ResourceClaim `json:"claims"`
	Classes   []*resourceapi.DeviceClass   `json:"classes"`
	Allocated [][3]string                  `json:"allocated"`
	SlicesKey string                       `json:"slicesKey"`
	TimeoutMs int                          `json:"timeoutMs"`
}

var slicesByKey = map[string][]*resourceapi.ResourceSlice{}

type device struct {
	Request     string `json:"request"`
	Driver      string `json:"driver"`
	Pool        string `json:"pool"`
	Device      string `json:"device"`
	AdminAccess bool   `json:"adminAccess,omitempty"`
}

type output struct {
	ID     string     `json:"id"`
	Result string     `json:"result"`
	Reason string     `json:"reason,omitempty"`
	Claims [][]device `json:"claims,omitempty"`
	Steps  int64      `json:"steps"`
}

type classLister map[string]*resourceapi.DeviceClass

func (l classLister) List() ([]*resourceapi.DeviceClass, error) {
	classes := make([]*resourceapi.DeviceClass, 0, len(l))
	for _, class := range l {
		classes = append(classes, class)
	}
	return classes, nil
}

func (l classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	if class, ok := l[name]; ok {
		return class, nil
	}
	return nil, apierrors.NewNotFound(resourceapi.Resource("deviceclasses"), name)
}

var features = structured.Features{
	AdminAccess:            true,
	PrioritizedList:        true,
	PartitionableDevices:   true,
	DeviceTaints:           true,
	DeviceBindingAndStatus: true,
	ConsumableCapacity:     true,
}

// One cache for the whole run, as kube-scheduler keeps one per plugin instance.
var celCache = cel.NewCache(10, cel.Features{EnableConsumableCapacity: true})

func run(c *inputCase) output {
	out := output{ID: c.ID}
	classes := classLister{}
	for _, class := range c.Classes {
		classes[class.Name] = class
	}
	allocated := sets.New[structured.DeviceID]()
	for _, key := range c.Allocated {
		allocated.Insert(structured.MakeDeviceID(key[0], key[1], key[2]))
	}
	state := structured.AllocatedState{
		AllocatedDevices:         allocated,
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
	}
	timeout := 10 * time.Second
	if c.TimeoutMs > 0 {
		timeout = time.Duration(c.TimeoutMs) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	allocator, err := structured.NewAllocator(ctx, features, state, classes, c.Slices, celCache)
	if err != nil {
		out.Result, out.Reason = "error", err.Error()
		return out
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.Node}}
	results, err := allocator.Allocate(ctx, node, c.Claims)
	out.Steps = steps(allocator)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		out.Result = "timeout"
	case errors.Is(err, structured.ErrFailedAllocationOnNode):
		out.Result, out.Reason = "unschedulable", err.Error()
	case err != nil:
		out.Result, out.Reason = "error", err.Error()
	case len(results) != len(c.Claims):
		out.Result, out.Reason = "unschedulable", "cannot allocate all claims"
	default:
		out.Result = "allocated"
		out.Claims = make([][]device, len(results))
		for i, result := range results {
			out.Claims[i] = []device{}
			for _, r := range result.Devices.Results {
				out.Claims[i] = append(out.Claims[i], device{
					Request:     r.Request,
					Driver:      r.Driver,
					Pool:        r.Pool,
					Device:      r.Device,
					AdminAccess: r.AdminAccess != nil && *r.AdminAccess,
				})
			}
		}
	}
	return out
}

// steps reads GetStats().NumAllocateOneInvocations, which the incubating allocator has but the
// public interface does not name (its type is internal).
func steps(allocator structured.Allocator) int64 {
	method := reflect.ValueOf(allocator).MethodByName("GetStats")
	if !method.IsValid() {
		return -1
	}
	return method.Call(nil)[0].FieldByName("NumAllocateOneInvocations").Int()
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<30)
	writer := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(writer)
	for scanner.Scan() {
		line := scanner.Bytes()
		if len(line) == 0 {
			continue
		}
		var c inputCase
		var out output
		err := json.Unmarshal(line, &c)
		if err == nil && c.SlicesKey != "" {
			if c.Slices != nil {
				slicesByKey[c.SlicesKey] = c.Slices
			} else if kept, ok := slicesByKey[c.SlicesKey]; ok {
				c.Slices = kept
			} else {
				err = fmt.Errorf("no slices kept under %q", c.SlicesKey)
			}
		}
		if err != nil {
			out = output{ID: c.ID, Result: "invalid", Reason: fmt.Sprintf("decode case: %v", err)}
		} else {
			out = run(&c)
		}
		if err := encoder.Encode(out); err != nil {
			fmt.Fprintf(os.Stderr, "write result: %v\n", err)
			os.Exit(1)
		}
		// One result per case as soon as it is known: the caller may send the next
		// case only after reading this one.
		if err := writer.Flush(); err != nil {
			fmt.Fprintf(os.Stderr, "write result: %v\n", err)
			os.Exit(1)
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "read cases: %v\n", err)
		os.Exit(1)
	}
}
