module mig-extender/gorand-reference

go 1.26
