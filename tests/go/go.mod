module bhasha/tmplrender

go 1.19
